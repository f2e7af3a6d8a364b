"""Text that reaches a terminal: what a model, a script file or a store holds is shown as text, never
obeyed as terminal commands."""

from __future__ import annotations

import re

# C0 and C1 controls (ESC starts ANSI sequences; U+009B is a one-character CSI), DEL, bidirectional
# overrides and isolates (they reorder what follows), line and paragraph separators, lone surrogates
# (they cannot even be encoded for output)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` as one line that is safe to print: control characters (ANSI escape sequences, C1
    controls, newlines, tabs), bidirectional overrides and lone surrogates are written as Python
    escapes (`\\x1b`, `\\u202e`); everything else is left as it is."""
    return _UNSAFE.sub(_escape, str(text))


def human_count(n: float | None) -> str:
    """A count as people write model sizes: 12.3 K, 86 M, 0.88 B -> '878 M' ... ('' for None)."""
    if n is None:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{n:.0f}"


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 script', '2 scripts', '0 scripts' (`many`: the plural where it is not noun + 's')."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"

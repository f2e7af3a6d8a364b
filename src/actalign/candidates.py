"""The one rule for candidate action names, used by the CLI, manifests, locate and the app.

    clean_candidate("1. Tip-in ")          -> "Tip-in"   (benchmarks number their choices)
    candidates_from_text("Tip-in\\n# note\\nSky hook")  -> ["Tip-in", "Sky hook"]
    check_candidates(["Tip-in", "tip-in"])  -> ActAlignError: given twice

Rules: numbering ("1.", "2)", "(3)", "4:") and surrounding or repeated spaces are removed; in text
(a file, the app's box) one candidate per line, blank lines and lines starting with '#' skipped;
names equal up to case and spaces are the same candidate (their scores would tie), so a repeat is
refused; at least MIN_CANDIDATES are needed (one candidate still gives its steps' timestamps).
Names (candidates and domains) never hold control characters (NUL, escapes, line breaks left after
cleaning): `check_name`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from actalign.errors import ActAlignError
from actalign.files import check_text

MIN_CANDIDATES = 1
_NUMBERING = re.compile(r"^\s*\(?\d+\s*[.):]\s*")


_CONTROL = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def check_name(name: str, what: str) -> str:
    """`name` when it is printable text; one sentence when it holds a control character (a NUL, an
    escape, a line break) or a character that cannot be written as UTF-8. what: "The candidate",
    "The domain"."""
    check_text(name, f"{what} {name!r}")
    bad = next((ch for ch in name if unicodedata.category(ch) in _CONTROL), None)
    if bad is not None:
        raise ActAlignError(
            f"{what} {name!r} holds a control character ({bad!r}); names must be plain printable text."
        )
    return name


def check_domain(domain: object, where: str = "") -> str:
    """A domain name, stripped: non-empty text without control characters, or one sentence."""
    if domain is not None and not isinstance(domain, str):
        raise ActAlignError(f"The domain{_in(where)} must be text, got {domain!r}.")
    if not domain or not domain.strip():
        raise ActAlignError(f"Give a domain{_in(where)}, e.g. basketball.")
    return check_name(domain.strip(), "The domain")


def norm(name: str) -> str:
    """Case- and space-insensitive form of an action or domain name."""
    return " ".join(name.lower().split())


def clean_candidate(name: str) -> str:
    """'1. Tip-in ' -> 'Tip-in': lists pasted from a benchmark (ActionAtlas numbers its choices)."""
    return " ".join(_NUMBERING.sub("", name).split())


def candidates_from_text(text: str | None) -> list[str]:
    """Candidate lines of a text (a --candidates-file, the app's box), not yet checked."""
    lines = (line.strip() for line in (text or "").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def check_candidates(candidates: Sequence[str] | str, where: str = "") -> list[str]:
    """Cleaned candidate names, in the given order; one ActAlignError naming the problem.

    where: how the error names the source ("" for the command line, e.g. "the manifest row").
    """
    if isinstance(candidates, str):
        candidates = [candidates]
    if not isinstance(candidates, (list, tuple)):
        raise ActAlignError(f"Candidates{_in(where)} must be a list of action names, got {candidates!r}.")
    names = []
    for c in candidates:
        if not isinstance(c, str):
            raise ActAlignError(f"Every candidate{_in(where)} must be text, got {c!r}.")
        if clean_candidate(c):
            check_text(c, f"The candidate {c!r}")
            names.append(check_name(clean_candidate(c), "The candidate"))
    if len(names) < MIN_CANDIDATES:
        how = "list at least one action" if where else "pass `candidates=A B C` or `candidates_file=F`"
        raise ActAlignError(f"No candidate actions given{_in(where)}; {how}.")
    seen: set[str] = set()
    for c in names:
        if norm(c) in seen:
            raise ActAlignError(
                f"The candidate {c!r} is given twice{_in(where)} (up to case); "
                "each candidate must be distinct."
            )
        seen.add(norm(c))
    return names


def _in(where: str) -> str:
    return f" in {where}" if where else ""

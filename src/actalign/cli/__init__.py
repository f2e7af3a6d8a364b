"""The `actalign` command: one module per subcommand, each only parsing and calling the library.

Errors users can cause print one sentence on stderr (`error: ...`) and exit with status 2 (1 when
some of several inputs failed and the others were done); warnings print as `warning: ...`. A
closed output pipe (`actalign ... | head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

from actalign import __version__
from actalign.errors import ActAlignError

# torch's OpenMP threads spin while they wait; beside decode worker processes on the same cores
# that spinning takes the CPU the decoders need (measured: batch runs on 2 cores went from 0.72
# to 0.90 of decode-only speed). Passive waiting costs a single run nothing measurable. It must be
# set before torch loads, so here, where the command starts; your environment's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# subcommand name -> module under actalign.cli (each has add_parser(sub) and run(args))
COMMANDS = {
    "classify": "classify",
    "locate": "locate",
    "index": "index",
    "search": "search",
    "batch": "batch",
    "eval": "eval",
    "untrimmed": "untrimmed",
    "plot": "plot",
    "scripts": "scripts",
    "models": "models",
    "app": "app",
}


def _module(name: str):
    import importlib

    return importlib.import_module(f"actalign.cli.{COMMANDS[name]}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends alike: "(default: X)" with the parser's own value, "(default: off)"
    for a switch, "(required)"; a help that states its default in words (what happens without the
    option) keeps it."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if not action.option_strings or "(default: " in text or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default in (None, []):
            return text  # the help must say what happens without it (tests/test_help.py)
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported like every other error: one line, exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="actalign",
        description="Zero-shot fine-grained video classification by aligning LLM-written step "
        "scripts to video frames (ActAlign).",
    )
    parser.add_argument("--version", action="version", version=f"actalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        _module(name).add_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as `warning: ...`; another library's (Ray, transformers) only with -v, named as
    its own (they are not ours to fix)."""
    from actalign import progress

    where = Path(filename).parts
    installed = "site-packages" in where or "dist-packages" in where
    if "actalign" in where or not installed:
        print(f"warning: {as_flags(str(message))}", file=sys.stderr)
    elif progress.is_verbose():  # another library's (not ours to fix): with -v, named as its own
        library = next(
            (p for p in where if p in ("ray", "transformers", "torch", "gradio")), Path(filename).stem
        )
        print(f"{library}: {category.__name__}: {message}", file=sys.stderr)


def as_flags(text: str) -> str:
    """A library message as the command line says it: its parameters (`name=VALUE`, `name`)
    named as flags (--name VALUE, --name)."""
    import re

    known = _flag_names()

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(3)
        if name.replace("_", "-") not in known:
            return m.group(0)
        return f"--{name.replace('_', '-')}" + (f" {value}" if value is not None else "")

    return re.sub(r"`([a-z][a-z0-9_]*)(=([^`]*))?`", flag, text)


def _flag_names() -> set[str]:
    """Every long option of every command, without its dashes."""
    parser = build_parser()
    commands = list(_subparsers(parser).values())
    for command in list(commands):  # and the actions of a command with actions (index build)
        nested = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        commands += list(nested.choices.values()) if nested is not None else []
    return {o[2:] for p in commands for a in p._actions for o in a.option_strings if o.startswith("--")}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; a flag the command does not know is reported by that command, with the closest
    flag it has (argparse alone blames the top-level parser and suggests nothing)."""
    import difflib

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = _subparsers(parser)[args.command]
        flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
        unknown = next((x.split("=")[0] for x in extra if x.startswith("-")), None)
        close = difflib.get_close_matches(unknown, flags, n=1) if unknown else []
        hint = f"; did you mean {close[0]}?" if close else ""
        if not unknown and args.command == "locate":
            hint = "; locate takes one video"
        command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager's or `kill`'s stop), handled as Ctrl-C is: one line, no traceback."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from actalign import progress

    own = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if own else None
    try:
        try:
            return _main(args, progress)
        finally:
            if own:
                signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt as e:  # in the moment between the command's end and here
        return _interrupted(isinstance(e, Terminated))


def _interrupted(terminated: bool) -> int:
    print("terminated" if terminated else "interrupted", file=sys.stderr)
    return 143 if terminated else 130


def _late_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM once the command is over, while Python shuts down (Ray's and
    multiprocessing's exit hooks): one line and the signal's status, never a traceback."""
    code = _interrupted(signum == signal.SIGTERM)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


def exit_with(code: int) -> None:
    """sys.exit(code), with a signal during Python's shutdown handled as `_late_signal` says."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _late_signal)
        signal.signal(signal.SIGTERM, _late_signal)
    sys.exit(code)


def _main(args, progress) -> int:
    from actalign import startup

    startup.begin()
    progress.configure(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    if not progress.is_verbose():  # the libraries underneath log to stderr: their lines with -v only
        import logging

        for name in ("ray", "transformers", "torch", "httpx", "gradio", "urllib3", "filelock"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return _run(args)
    finally:
        said = startup.line() if getattr(args, "verbose", False) else None
        if said:
            print(said, file=sys.stderr)


def _run(args) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            # what Python hides from users by default stays hidden: sockets and subprocesses
            # that other libraries leave to the garbage collector, their deprecations
            for hidden in (ResourceWarning, DeprecationWarning, PendingDeprecationWarning):
                warnings.simplefilter("ignore", hidden)
            warnings.showwarning = _show_warning
            code = _module(args.command).run(args)
        sys.stdout.flush()
        return code
    except ActAlignError as e:
        print(f"error: {as_flags(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(isinstance(e, Terminated))
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining when it
        # flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def entry() -> None:
    """Console-script entry point."""
    exit_with(main())


if __name__ == "__main__":
    entry()

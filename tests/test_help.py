"""The help of every command: each option says what it does and what happens without it, in one
style ("(default: X)" at the end, "(required)" for a required option); positionals are named
alike (VIDEO, MANIFEST, ...); each subcommand has a one-paragraph description."""

from __future__ import annotations

import argparse
import re

import pytest

from actalign.cli import _subparsers as subparsers
from actalign.cli import build_parser, main

# `actalign scripts ...` is left out here: its options belong to cli/scripts.py, which another
# change of the same issue rewrites (--strategy for show/export/stats); it joins this walk after.
SKIPPED = {"scripts"}

ENDING = re.compile(r"\((default: [^()]*(\([^()]*\)[^()]*)*|required)\)$")
NESTED = {"index"}  # commands with actions of their own: each action is walked as a command


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of "classify" or of a nested action, "index build"."""
    parser = build_parser()
    for word in name.split():
        parser = subparsers(parser)[word]
    return parser


COMMANDS = [name for name in subparsers(build_parser()) if name not in SKIPPED]
COMMANDS += [f"{n} {a}" for n in NESTED for a in subparsers(command_parser(n))]


def shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as `CMD --help` prints it (defaults filled in), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield action


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_states_its_default_in_one_style(name):
    parser = command_parser(name)
    for action in options(parser):
        if not action.option_strings:
            continue
        flag = action.option_strings[-1]
        assert action.help, f"{name} {flag} has no help"
        text = shown_help(parser, action)
        assert ENDING.search(text), f"{name} {flag}: the help ends without '(default: ...)': {text!r}"
        assert text.lower().count("default") <= 1, f"{name} {flag} states a default twice: {text!r}"
        if action.required:
            assert text.endswith("(required)"), f"{name} {flag}: {text!r}"
        elif isinstance(action, argparse._StoreTrueAction):
            assert text.endswith("(default: off)"), f"{name} {flag}: {text!r}"
        elif action.default not in (None, []) and "(default: " not in action.help:
            assert text.endswith(f"(default: {action.default})"), f"{name} {flag}: {text!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_positionals_are_named_alike(name):
    parser = command_parser(name)
    for action in options(parser):
        if action.option_strings:
            continue
        assert action.metavar and re.fullmatch(r"[A-Z][A-Z_]*", action.metavar), (
            f"{name}: the positional {action.dest} is shown as {action.metavar or action.dest!r}, "
            "not an upper-case name like VIDEO or MANIFEST"
        )
        assert action.help, f"{name} {action.metavar} has no help"
        assert "default" not in action.help


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_a_one_paragraph_description(name, capsys):
    parser = command_parser(name)
    text = parser.description or ""
    assert len(text.split()) >= 8 and "\n\n" not in text and text.rstrip().endswith("."), text
    with pytest.raises(SystemExit) as done:
        main([*name.split(), "--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert " ".join(text.split()) in shown


def test_the_command_list_says_what_each_subcommand_does(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in subparsers(build_parser()):
        line = next((x for x in out.splitlines() if x.split()[:1] == [name]), "")
        assert len(line.split()) > 2, f"{name} is listed without a summary"

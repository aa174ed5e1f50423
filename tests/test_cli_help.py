"""Every command's ``--help`` reads as plain text (docstrings' reStructuredText markup,
double backquotes and Sphinx roles, is for the API docs, not for a terminal), and the
commands it names exist, with the options it gives them."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
from test_doc_examples import mistake

from orchestrator.cli import cli

MARKUP = re.compile(r"``|:(class|func|meth|mod|attr|data):`")
# A command named in a help text: up to a quote, a parenthesis, a comma or the line's end.
NAMED = re.compile(r"stockade [a-z][^`'\"(),;]*")


def commands(
    group: click.Group, context: click.Context, path: str = "stockade"
) -> Iterator[tuple[str, click.Command, click.Context]]:
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        inner = click.Context(command, info_name=name, parent=context)
        yield f"{path} {name}", command, inner
        if isinstance(command, click.Group):
            yield from commands(command, inner, f"{path} {name}")


def test_no_help_text_shows_markup() -> None:
    root = click.Context(cli, info_name="stockade")
    found = list(commands(cli, root))
    assert len(found) > 30, "every command and subcommand is walked"
    marked = {
        path: [
            line.strip() for line in command.get_help(context).splitlines() if MARKUP.search(line)
        ]
        for path, command, context in [("stockade", cli, root), *found]
    }
    assert {path: lines for path, lines in marked.items() if lines} == {}


def test_commands_named_in_help_exist() -> None:
    root = click.Context(cli, info_name="stockade")
    named = {
        (path, shown.group(0).strip())
        for path, command, context in [("stockade", cli, root), *commands(cli, root)]
        for line in command.get_help(context).splitlines()
        for shown in NAMED.finditer(line)
    }
    assert len(named) > 20, "the help texts' command lines are found"
    assert {(path, line, mistake(line)) for path, line in named if mistake(line)} == set()

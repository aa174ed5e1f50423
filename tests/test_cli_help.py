"""Every command's ``--help`` reads as plain text: docstrings' reStructuredText markup
(double backquotes, Sphinx roles) is for the API docs, not for a terminal."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click

from orchestrator.cli import cli

MARKUP = re.compile(r"``|:(class|func|meth|mod|attr|data):`")


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

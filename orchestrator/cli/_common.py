"""What every ``stockade`` command shares: configuration, exit codes, clean-up, output.

Exit codes: 0 the command did what was asked; 1 the thing failed (a tool
call that did not succeed, a broken chain, an unreachable engine); 2 a usage
or configuration mistake, including an argument that names nothing (no such
run, request, token, tool or audit log: :func:`not_found`). SIGTERM is turned
into the same cancellation as Ctrl-C, so the platform's clean-up (pools,
containers) runs either way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.config import LoadedConfig, config_file_from_env, load_config
from orchestrator.display import for_display, json_for_people
from orchestrator.metrics import configure_logging

_HERE = "stockade.yaml"

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "config_option",
    "echo_json",
    "echo_untrusted",
    "json_option",
    "load",
    "not_found",
    "progress",
    "run_async",
    "stop_signals",
    "table",
    "toolkit_option",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _NotFound(click.ClickException):
    exit_code = EXIT_USAGE


def not_found(message: str) -> click.ClickException:
    """The error for an argument that names nothing (a run, an approval request, a token,
    a tool): exit 2, as for any other mistake in what was typed, since nothing was
    attempted (1 means the thing was tried and failed). One line, ``Error: message``:
    click's usage lines would add nothing about an id."""
    return _NotFound(message)


def config_option(command: F) -> F:
    """``--config FILE``: the configuration file (else ``$STOCKADE_CONFIG``, else defaults)."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Configuration file (stockade.yaml). Default: $STOCKADE_CONFIG, else built-in "
        "defaults.",
    )(command)


def toolkit_option(command: F) -> F:
    """``--toolkit PKG`` (repeatable): the toolkits, instead of the configured ones."""
    return click.option(
        "--toolkit",
        "toolkits",
        multiple=True,
        help="Importable toolkit package (repeatable). Default: the configuration's toolkits.",
    )(command)


def json_option(command: F) -> F:
    """``--json``: print a machine-readable document instead of the human view."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")(command)


def load(config_file: Path | None, *, toolkits: tuple[str, ...] = (), **flags: Any) -> LoadedConfig:
    """The effective configuration; ``flags`` are dotted fields set on the command line.

    Also sets up the log as configured (``logging``, or the top-level
    ``--log-format`` and ``--log-level``); left alone when nothing asks for a
    format or level, so plain warnings reach the terminal as they always did.
    """
    context = click.get_current_context(silent=True)
    top = context.find_root().params if context is not None else {}
    if config_file is None and config_file_from_env() is None and Path(_HERE).is_file():
        # Never read by itself: a directory one happens to run in (a checkout, an
        # agent's workspace) must not configure, let alone loosen, the platform.
        click.echo(
            f"note: ./{_HERE} is not read: pass --config {_HERE} or set STOCKADE_CONFIG "
            "(without either, the built-in defaults apply)",
            err=True,
        )
    loaded = load_config(
        config_file,
        flags={
            **flags,
            "toolkits": list(toolkits) or None,
            "logging.format": top.get("log_format"),
            "logging.level": top.get("log_level"),
        },
    )
    logs = loaded.config.logging
    if logs.format == "json" or logs.level is not None:
        configure_logging(logs.format, logs.level)
    return loaded


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C, so clean-up code always runs."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("interrupted; sandboxes removed", err=True)
        sys.exit(EXIT_INTERRUPTED)


def stop_signals() -> dict[signal.Signals, str]:
    """The signals that stop a long command, each with the reason it gives.

    Ctrl-C only when this process was not started ignoring it: a shell without
    job control starts a background command (``stockade run … &``) so, and the
    Ctrl-C typed for the foreground command must not stop it too.
    """
    signals = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated"}
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        del signals[signal.SIGINT]
    return signals


def echo_json(document: Any) -> None:
    """Print ``document`` as indented JSON."""
    # Read by programs, and often by people on a terminal: nothing in it acts on one.
    click.echo(json_for_people(document, sort_keys=False, default=str))


def echo_untrusted(text: str, *, err: bool = False) -> None:
    """Print text a model, a tool or a sandbox chose (an answer, an output, an error): on
    a terminal without the control sequences it would act on (:func:`for_display`);
    into a pipe or a file as it is, since a program reading it wants the bytes."""
    stream = sys.stderr if err else sys.stdout
    click.echo(for_display(text) if stream.isatty() else text, err=err)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print an aligned table (no borders, so it can be read with ``awk`` too)."""
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        grid.add_column(header, overflow="fold")
    for row in rows:
        # Text, never markup: a goal or a reason holding "[data/x.csv]" or "[/b]" is
        # shown as written (rich would take it for a style, or fail on it).
        grid.add_row(*(Text(for_display("" if cell is None else str(cell))) for cell in row))
    # Piped output is not cut to 80 columns: a program reads whole lines.
    width = None if sys.stdout.isatty() else 1_000
    console = Console(width=width, soft_wrap=True, highlight=False)
    with console.capture() as captured:
        console.print(grid)
    # Without the padding rich gives the last column: no line ends in spaces.
    lines = captured.get().splitlines()
    click.echo("\n".join(line.rstrip(" ") for line in lines))


def progress(message: str) -> None:
    """A progress line on standard error (standard output stays for results).

    Without control sequences: a line often quotes what a file or a server chose
    (a requirement of a toolkit, a registry's answer, a build's output), and a
    terminal or a CI log page would act on them."""
    click.echo(f"  {for_display(message)}", err=True)

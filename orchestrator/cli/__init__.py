"""The ``stockade`` command line: one module per command group, shared helpers in ``_common``."""

from __future__ import annotations

import importlib
import io
import sys

import click

from orchestrator.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from orchestrator.display import for_display
from orchestrator.errors import ConfigError, NotFoundError, StockadeError, UsageError
from orchestrator.metrics import LOG_FORMATS

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS = {
    "approvals": "orchestrator.cli.approvals:approvals",
    "audit": "orchestrator.cli.audit:audit",
    "cleanup": "orchestrator.cli.images:cleanup",
    "config": "orchestrator.cli.config:config",
    "demo": "orchestrator.cli.demo:demo",
    "doctor": "orchestrator.cli.doctor:doctor",
    "hosts": "orchestrator.cli.hosts:hosts",
    "images": "orchestrator.cli.images:images",
    "mcp": "orchestrator.cli.mcp:mcp",
    "metrics": "orchestrator.cli.metrics:metrics",
    "policy": "orchestrator.cli.policy:policy",
    "run": "orchestrator.cli.run:run",
    "runs": "orchestrator.cli.runs:runs",
    "sandbox": "orchestrator.cli.sandbox:sandbox",
    "serve": "orchestrator.cli.serve:serve",
    "tokens": "orchestrator.cli.tokens:tokens",
    "tools": "orchestrator.cli.tools:tools",
}
"""Every command, by name: the module and attribute that define it."""


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or help lists it).

    Importing every command eagerly cost ~2 s per invocation (the agent loop's
    OpenAI client, the HTTP server, the MCP SDK): `stockade approvals list`
    does not need them. The pattern is click's own ("lazily loading subcommands").
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # a wrong entry in COMMANDS
            raise TypeError(f"{target} is not a click command")
        self.add_command(command, cmd_name)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="stockade")
@click.option("--log-format", type=click.Choice(LOG_FORMATS),
              help="Log as text or JSON lines (run, call, tool, decision, status). "
              "Default: logging.format.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Lowest level logged. Default: logging.level.")  # fmt: skip
def cli(log_format: str | None, log_level: str | None) -> None:
    """Stockade: every tool call of an LLM agent in a throwaway, hardened container.

    \b
    Exit codes:
      0    done
      1    the thing failed (a tool call, a run, a broken audit chain, no engine)
      2    a usage or configuration mistake, or an argument that names nothing
           (no such run, approval request, token, tool or audit log)
      130  interrupted (Ctrl-C, SIGTERM)
    """


def _show(exc: click.ClickException) -> None:
    """Print ``exc`` as click does, without the control sequences of the values it quotes
    (an argument as typed, a name read from a file or a store)."""
    shown = io.StringIO()
    exc.show(file=shown)
    click.echo(for_display(shown.getvalue()), err=True, nl=False)


def main() -> None:
    """Entry point of the ``stockade`` command."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:
        _show(exc)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _show(exc)
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        # Quotes the file's own keys and values, and its name: a file from elsewhere (a
        # pull request, a shared directory) must not drive the terminal (or a CI log page).
        click.echo(f"configuration error: {for_display(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except (UsageError, NotFoundError) as exc:
        # A value the operator typed, refused by the library the command passed it to
        # (`run --run-id` of a run already used, a goal of blanks): exit as for a usage
        # mistake, as the commands' own checks do.
        click.echo(f"error: {for_display(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except (
        StockadeError
    ) as exc:  # infrastructure errors say what to do (engine down: how to start it)
        click.echo(f"error: {for_display(str(exc))}", err=True)
        sys.exit(EXIT_FAILED)
    except UnicodeEncodeError as exc:
        # An argument holding bytes that are not UTF-8 reaches Python as lone surrogates,
        # which no database, file or page can store: the operator's input, not a crash.
        click.echo(
            f"error: not UTF-8 text: {exc.object[:200]!r}; arguments must be UTF-8", err=True
        )
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        # A state path (STOCKADE_HOME, a database, a log) that is a directory, or missing,
        # or not writable: the message names the file, and a traceback would add nothing.
        click.echo(f"error: {for_display(str(exc))}", err=True)
        sys.exit(EXIT_FAILED)

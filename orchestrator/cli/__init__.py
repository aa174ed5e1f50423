"""The ``stockade`` command line: one module per command group, shared helpers in ``_common``."""

from __future__ import annotations

import sys

import click

from orchestrator.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from orchestrator.cli.approvals import approvals
from orchestrator.cli.audit import audit
from orchestrator.cli.config import config
from orchestrator.cli.demo import demo
from orchestrator.cli.doctor import doctor
from orchestrator.cli.hosts import hosts
from orchestrator.cli.images import cleanup, images
from orchestrator.cli.mcp import mcp
from orchestrator.cli.metrics import metrics
from orchestrator.cli.policy import policy
from orchestrator.cli.run import run
from orchestrator.cli.runs import runs
from orchestrator.cli.sandbox import sandbox
from orchestrator.cli.serve import serve
from orchestrator.cli.tokens import tokens
from orchestrator.cli.tools import tools
from orchestrator.errors import ConfigError, StockadeError
from orchestrator.metrics import LOG_FORMATS

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="stockade")
@click.option("--log-format", type=click.Choice(LOG_FORMATS),
              help="Log as text or JSON lines (run, call, tool, decision, status). "
              "Default: logging.format.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Lowest level logged. Default: logging.level.")  # fmt: skip
def cli(log_format: str | None, log_level: str | None) -> None:
    """Stockade: every tool call of an LLM agent in a throwaway, hardened container."""


for command in (config, doctor, images, cleanup, sandbox, tools, policy, audit, approvals, demo,
                metrics, hosts,
                serve, tokens, run, runs, mcp):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``stockade`` command."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except (
        StockadeError
    ) as exc:  # infrastructure errors say what to do (engine down: how to start it)
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)

"""``stockade sandbox run``: an operator's command in a fresh sandbox of a configured profile."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo_json,
    load,
    run_async,
)
from orchestrator.errors import ConfigError
from orchestrator.platform import Platform
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus

__all__ = ["sandbox"]


@click.group()
def sandbox() -> None:
    """Run commands in single-use sandboxes (for operators; agents call tools)."""


@sandbox.command("run", context_settings={"ignore_unknown_options": True})
@config_option
@click.option("--profile", "profile_name", default="default", show_default=True,
              help="Configured sandbox profile.")  # fmt: skip
@click.option("--run-id", help="Run whose workspace the command sees (kept between calls).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Deadline in seconds (at most the profile's).")  # fmt: skip
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def sandbox_run(
    config_file: Path | None,
    profile_name: str,
    run_id: str | None,
    timeout: float | None,
    argv: tuple[str, ...],
) -> None:
    """Run ARGV in a fresh sandbox and print the result as JSON.

    Exits 0 only when the command succeeded. Example:

        stockade sandbox run --run-id demo -- sh -c 'echo hi > note.txt'
    """
    loaded = load(config_file)
    # Before the engine is reached: a mistyped name is not hidden behind "the engine is down".
    configured = loaded.config.sandbox.effective_profiles()
    if profile_name not in configured:
        raise ConfigError(
            f"unknown profile {profile_name!r}; configured: " + ", ".join(sorted(configured)),
            field="--profile",
        )

    async def run() -> ExecResult:
        async with Platform.open(loaded, pools=False) as platform:
            profile = platform.profiles[profile_name]
            workspace = platform.workspaces.open(run_id) if run_id else None
            request = ExecRequest(argv=argv, workspace=workspace, timeout_s=timeout)
            return await platform.sandbox.execute(request, profile)

    result = run_async(run())
    echo_json(result.model_dump(mode="json"))
    sys.exit(EXIT_OK if result.status is ExecStatus.OK else EXIT_FAILED)

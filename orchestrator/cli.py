"""The ``stockade`` command line."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import docker
import docker.errors

from orchestrator._approvals_cli import approvals
from orchestrator._audit_cli import audit
from orchestrator._policy_cli import policy
from orchestrator._tools_cli import TOOLKIT_OPTION, external_toolkits, tools
from orchestrator.errors import ConfigError, StockadeError
from orchestrator.paths import stockade_home
from orchestrator.sandbox.config import load_profile
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.reaper import reap
from orchestrator.sandbox.workspace import WorkspaceManager

__all__ = ["main"]

T = TypeVar("T")


def _client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise click.ClickException(
            f"cannot reach the Docker engine ({exc}); start it with scripts/setup.sh"
        ) from exc
    return client


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C, so clean-up code always runs."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("interrupted; sandboxes removed", err=True)
        sys.exit(130)


@click.group()
@click.version_option(package_name="stockade")
def cli() -> None:
    """Stockade: every tool call of an LLM agent in a throwaway, hardened container."""


@cli.group()
def images() -> None:
    """Sandbox images."""


@images.command("build")
@click.option(
    "--base-image",
    envvar="STOCKADE_BASE_IMAGE",
    help="Registry image to use as base (e.g. python:3.12-slim). "
    "Default: build from Debian packages.",
)
@TOOLKIT_OPTION
def images_build(base_image: str | None, toolkits: tuple[str, ...]) -> None:
    """Build the sandbox images; only what changed is rebuilt.

    Toolkits outside ``toolkits/`` named with --toolkit (or $STOCKADE_TOOLKITS)
    are baked into the tools image with their requirements.
    """
    builder = ImageBuilder(
        _client(), base_image=base_image, toolkits=external_toolkits(toolkits), progress=_progress
    )
    started = time.monotonic()
    for image in builder.build_all():
        state = "built" if image.built else "up to date"
        click.echo(f"{image.tag}  {state}  {image.image_id[:19]}  {image.seconds:.1f}s")
    click.echo(f"images ready in {time.monotonic() - started:.1f}s")


@cli.command()
@click.option(
    "--all", "everything", is_flag=True, help="Remove every Stockade container, live owners' too."
)
def cleanup(everything: bool) -> None:
    """Remove leaked sandbox containers (owner gone or deadline passed)."""
    removed = reap(_client(), everything=everything)
    for container in removed:
        click.echo(f"removed {container.id[:12]}: {container.reason}")
    click.echo(f"{len(removed)} container(s) removed")


@cli.group()
def sandbox() -> None:
    """Run commands in single-use sandboxes."""


@sandbox.command("run", context_settings={"ignore_unknown_options": True})
@click.option(
    "--profile", "profile_path", type=click.Path(path_type=Path), help="Profile file (YAML)."
)
@click.option("--run-id", help="Run whose workspace the command sees (kept between calls).")
@click.option("--timeout", type=float, help="Deadline in seconds (at most the profile's).")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def sandbox_run(
    profile_path: Path | None, run_id: str | None, timeout: float | None, argv: tuple[str, ...]
) -> None:
    """Run ARGV in a fresh sandbox and print the result as JSON.

    Exits 0 only when the call succeeded. Example:

        stockade sandbox run --run-id demo -- sh -c 'echo hi > note.txt'
    """
    profile = load_profile(profile_path) if profile_path else SandboxProfile(pool_size=0)
    workspaces = WorkspaceManager(stockade_home() / "workspaces")

    async def run() -> ExecStatus:
        async with DockerBackend(_client()) as backend:
            workspace = workspaces.open(run_id) if run_id else None
            result = await backend.execute(
                ExecRequest(argv=argv, workspace=workspace, timeout_s=timeout), profile
            )
        click.echo(result.model_dump_json(indent=2))
        return result.status

    status = _run_async(run())
    sys.exit(0 if status is ExecStatus.OK else 1)


cli.add_command(tools)
cli.add_command(policy)
cli.add_command(audit)
cli.add_command(approvals)


@cli.command()
@click.option("--calls", default=20, show_default=True, help="Warm-pool calls to time.")
def demo(calls: int) -> None:
    """Show the sandbox at work: isolation, workspaces, containment and warm-pool speed."""
    from orchestrator.demo import run_demo  # noqa: PLC0415 - keeps CLI start-up light

    _run_async(run_demo(_client(), stockade_home(), calls=calls, echo=click.echo))


def main() -> None:
    """Entry point of the ``stockade`` command."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    except StockadeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)

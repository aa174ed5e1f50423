"""``stockade demo``: the README's main job, a tour of the platform on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli._common import config_option, load, run_async
from orchestrator.cli._demo_tour import run_demo

__all__ = ["demo"]


@click.command()
@config_option
@click.option("--calls", default=20, show_default=True, help="Warm-pool calls to time.")
def demo(config_file: Path | None, calls: int) -> None:
    """Show the platform at work: isolation, workspaces, containment, the gateway, the audit log."""
    run_async(run_demo(load(config_file), calls=calls, echo=click.echo))

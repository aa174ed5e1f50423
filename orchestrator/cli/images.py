"""``stockade images build`` and ``stockade cleanup``: the engine-side housekeeping."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.cli._common import (
    config_option,
    echo_json,
    json_option,
    load,
    progress,
    table,
    toolkit_option,
)
from orchestrator.platform import image_builder
from orchestrator.sandbox.engine import connect_engine
from orchestrator.sandbox.reaper import reap

__all__ = ["cleanup", "images"]


@click.group()
def images() -> None:
    """Sandbox images."""


@images.command("build")
@config_option
@toolkit_option
@json_option
@click.option(
    "--base-image",
    help="Registry image to use as base (e.g. python:3.12-slim). Default: the configuration's "
    "images.base_image, else build from Debian packages.",
)
def images_build(
    config_file: Path | None, toolkits: tuple[str, ...], as_json: bool, base_image: str | None
) -> None:
    """Build the sandbox images; only what changed is rebuilt.

    Toolkits outside the built-ins (named in the configuration or with
    --toolkit) are baked into the tools image with their requirements.
    """
    settings = load(config_file, toolkits=toolkits, **{"images.base_image": base_image}).config
    builder = image_builder(settings, connect_engine(), progress=progress)
    started = time.monotonic()
    built = builder.build_all()
    if as_json:
        echo_json(
            [
                {"tag": i.tag, "built": i.built, "image_id": i.image_id, "seconds": i.seconds}
                for i in built
            ]
        )
        return
    table(
        ["IMAGE", "STATE", "ID", "TIME"],
        [
            (i.tag, "built" if i.built else "up to date", i.image_id[:19], f"{i.seconds:.1f}s")
            for i in built
        ],
    )
    click.echo(f"images ready in {time.monotonic() - started:.1f}s")


@click.command()
@json_option
@click.option(
    "--all", "everything", is_flag=True, help="Remove every Stockade container, live owners' too."
)
def cleanup(as_json: bool, everything: bool) -> None:
    """Remove leaked sandbox containers (owner gone or deadline passed)."""
    removed = reap(connect_engine(), everything=everything)
    if as_json:
        echo_json([{"id": c.id, "reason": c.reason} for c in removed])
        return
    for container in removed:
        click.echo(f"removed {container.id[:12]}: {container.reason}")
    click.echo(f"{len(removed)} container(s) removed")

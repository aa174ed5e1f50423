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
from orchestrator.config import LoadedConfig
from orchestrator.errors import ConfigError
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
    --toolkit) are baked into the tools image with their requirements, and
    every image spec of images.specs gets its image. Python requirements are
    resolved (with hashes) before anything is built: a package that cannot be
    installed is named, with the setting, and nothing is built (exit 2).
    """
    loaded = load(config_file, toolkits=toolkits, **{"images.base_image": base_image})
    builder = image_builder(loaded.config, connect_engine(), progress=progress)
    started = time.monotonic()
    try:
        built = builder.build_all()
    except ConfigError as exc:
        raise _located(exc, loaded) from None
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


def _located(error: ConfigError, loaded: LoadedConfig) -> ConfigError:
    """``error`` with the file and line its field was written at, when it was written."""
    if error.file is not None or error.field is None:
        return error
    file, _, line = loaded.source_of(error.field).rpartition(":")
    if not file or not line.isdigit():
        return error
    return ConfigError(error.message, file=file, line=int(line), field=error.field)


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

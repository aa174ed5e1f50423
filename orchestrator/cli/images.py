"""``stockade images build|prune`` and ``stockade cleanup``: the engine-side housekeeping."""

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
from orchestrator.sandbox.image_prune import layers_size, remove_stale, stale_images
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
@click.option(
    "--refresh-base",
    is_flag=True,
    help="Build every base image again from Debian's current packages, security updates "
    "included (a registry base: pull it again), and then the images on it.",
)
def images_build(
    config_file: Path | None,
    toolkits: tuple[str, ...],
    as_json: bool,
    base_image: str | None,
    refresh_base: bool,
) -> None:
    """Build the sandbox images; only what changed is rebuilt.

    Toolkits outside the built-ins (named in the configuration or with
    --toolkit) are baked into the tools image with their requirements, and
    every image spec of images.specs gets its image. Python requirements are
    resolved (with hashes) before anything is built: a package that cannot be
    installed is named, with the setting, and nothing is built (exit 2).

    A base image is built once and keeps the packages of that day: Debian's
    security updates published later reach the sandboxes with --refresh-base,
    which builds each base again under the same tag; the images built on the
    superseded base are then older images for `stockade images prune`.
    """
    loaded = load(config_file, toolkits=toolkits, **{"images.base_image": base_image})
    client = connect_engine()
    builder = image_builder(loaded.config, client, refresh_base=refresh_base, progress=progress)
    started = time.monotonic()
    try:
        built = builder.build_all()
    except ConfigError as exc:
        raise _located(exc, loaded) from None
    stale = stale_images(client, {image.tag for image in built})
    if stale:
        progress(
            f"{len(stale)} older Stockade image(s) on this engine: "
            "`stockade images prune` removes them"
        )
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


@images.command("prune")
@config_option
@toolkit_option
@json_option
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def images_prune(
    config_file: Path | None, toolkits: tuple[str, ...], as_json: bool, dry_run: bool
) -> None:
    """Remove Stockade images the configuration's current inputs no longer make.

    Images are tagged by a hash of their inputs, so each upgrade or changed
    toolkit leaves the previous ones behind. Kept: what this configuration
    (with --toolkit) builds now, any image a container still uses, and
    anything not Stockade's. Another configuration's images on this engine
    are removed too (`stockade images build` with it makes them again).
    """
    loaded = load(config_file, toolkits=toolkits)
    client = connect_engine()
    try:
        keep = image_builder(loaded.config, client).current_tags()
    except ConfigError as exc:
        raise _located(exc, loaded) from None
    stale = stale_images(client, keep)
    if dry_run:
        if as_json:
            echo_json(
                [{"image": i.reference, "created": i.created, "used_by": i.used_by} for i in stale]
            )
            return
        table(
            ["IMAGE", "CREATED", "PRUNE"],
            [
                (
                    i.reference,
                    i.created[:19].replace("T", " "),
                    f"kept: used by {', '.join(i.used_by)}" if i.used_by else "would remove",
                )
                for i in stale
            ],
        )
        removable = sum(1 for i in stale if not i.used_by)
        click.echo(f"{removable} image(s) would be removed; {len(keep)} current image(s) kept")
        return
    before = layers_size(client)
    results = remove_stale(client, stale)
    freed = max(0, before - layers_size(client))
    if as_json:
        echo_json(
            {
                "images": [
                    {"image": r.reference, "removed": r.removed, "reason": r.reason}
                    for r in results
                ],
                "freed_bytes": freed,
            }
        )
        return
    for result in results:
        if result.removed:
            click.echo(f"removed {result.reference}")
        else:
            click.echo(f"kept {result.reference}: {result.reason}")
    removed = sum(1 for r in results if r.removed)
    click.echo(f"{removed} image(s) removed, {freed / 2**20:.0f} MiB freed")


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

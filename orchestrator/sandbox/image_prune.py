"""Removing Stockade images that the current inputs no longer make.

Every image is tagged by a hash of its inputs (:mod:`orchestrator.sandbox.images`),
so an upgrade, a changed toolkit or a changed image spec builds new images
beside the old ones, which nothing will run again: a few hundred megabytes
each time. ``stockade images prune`` removes them.

What is kept: every image the configuration's current inputs make (its
*keep* set), every image a container still uses (running or stopped: the
engine would refuse, and the warm pool of a running server may be on it),
and anything not labelled as Stockade's. Images are removed by tag, never
forced, newest first, so an image built on another goes before it.

A refreshed base (``stockade images build --refresh-base``) keeps its tag on a
new image; the superseded one is left untagged, and so are the images built
on it stale. Removing the last of those removes the untagged base with it
(the engine removes an image's untagged parents that nothing else uses); an
untagged Stockade image with nothing built on it is listed by its id and
removed like any other (:func:`remove_superseded` does the same for one
image).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import docker
import docker.errors

from orchestrator.sandbox.engine import engine_errors
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE

__all__ = [
    "PrunedImage",
    "StaleImage",
    "layers_size",
    "remove_stale",
    "remove_superseded",
    "stale_images",
]


@dataclass(frozen=True, kw_only=True)
class StaleImage:
    """A Stockade image the current inputs do not make."""

    reference: str
    """``name:tag``, or the image's id when it has no tag left."""
    image_id: str
    created: str
    """When the engine made it (RFC 3339, as the engine reports it)."""
    used_by: tuple[str, ...]
    """Short ids of the containers (running or stopped) made from it: it is kept."""


@dataclass(frozen=True, kw_only=True)
class PrunedImage:
    """What became of one stale image."""

    reference: str
    removed: bool
    reason: str | None = None
    """Why it was kept, when it was."""


def _references(attrs: dict[str, object], image_id: str) -> list[str]:
    # An untagged image has no tags (as inspected), or the placeholder "<none>:<none>" (as
    # listed by engines before API 1.44, 20.10's among them): either way it is named by its id.
    listed = attrs.get("RepoTags") or []
    assert isinstance(listed, list)
    tags = [tag for tag in listed if tag != "<none>:<none>"]
    # Only our own names: an image tagged both stockade-base:… and python:3.12-slim (a
    # registry base) loses the first tag and keeps the second.
    ours = [tag for tag in tags if isinstance(tag, str) and tag.startswith("stockade-")]
    if ours or tags:
        return ours
    return [image_id]


def _users(client: docker.DockerClient) -> dict[str, list[str]]:
    """Short ids of the containers (running or stopped) made from each image, by image id."""
    with engine_errors("containers.list"):
        containers = client.containers.list(all=True, ignore_removed=True)
    users: dict[str, list[str]] = {}
    for container in containers:
        image_id = str(container.attrs.get("Image", ""))
        users.setdefault(image_id, []).append(str(container.id)[:12])
    return users


def stale_images(client: docker.DockerClient, keep: Collection[str]) -> list[StaleImage]:
    """Stockade's images whose tags are not in ``keep``, newest first."""
    with engine_errors("images.list"):
        images = client.images.list(filters={"label": f"{PLATFORM_LABEL}={PLATFORM_VALUE}"})
    users = _users(client)
    found: list[StaleImage] = []
    for image in images:
        image_id = str(image.id)
        created = str(image.attrs.get("Created", ""))
        for reference in _references(image.attrs, image_id):
            if reference not in keep:
                used_by = tuple(users.get(image_id, ()))
                found.append(
                    StaleImage(
                        reference=reference, image_id=image_id, created=created, used_by=used_by
                    )
                )
    # RFC 3339 in one time zone sorts as text; a child is always newer than its parent.
    return sorted(found, key=lambda image: image.created, reverse=True)


def remove_stale(client: docker.DockerClient, stale: Sequence[StaleImage]) -> list[PrunedImage]:
    """Remove ``stale`` (from :func:`stale_images`), keeping what is still needed."""
    results: list[PrunedImage] = []
    for image in stale:
        if image.used_by:
            reason = f"used by container {', '.join(image.used_by)}"
            results.append(PrunedImage(reference=image.reference, removed=False, reason=reason))
            continue
        refused = _remove(client, image.reference)
        # A container made from it since the listing, or a kept image built on it: the
        # engine's words say which.
        results.append(
            PrunedImage(reference=image.reference, removed=refused is None, reason=refused)
        )
    return results


def _remove(client: docker.DockerClient, reference: str) -> str | None:
    """Remove ``reference``, never forced: None once it is gone, else the engine's refusal
    (409: a container or an image built on it still needs it)."""
    with engine_errors("images.remove"):
        try:
            client.images.remove(reference)
        except docker.errors.ImageNotFound:
            pass  # removed meanwhile (another prune, or with its last child)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return str(exc.explanation or exc)
    return None


def remove_superseded(client: docker.DockerClient, image_id: str) -> PrunedImage:
    """Remove the image ``image_id`` once no tag names it (a base a refresh replaced).

    Never forced: it is kept while a tag still names it (someone else's), a
    container uses it, or images are built on it (the stale images of the
    base it was, which ``stockade images prune`` removes, and it with them).
    """
    with engine_errors("images.get"):
        try:
            tags = list(client.images.get(image_id).tags)
        except docker.errors.ImageNotFound:
            return PrunedImage(reference=image_id, removed=True)  # gone meanwhile
    if tags:
        return PrunedImage(reference=image_id, removed=False, reason=f"still tagged {tags[0]}")
    used_by = _users(client).get(image_id)
    if used_by:
        reason = (
            f"used by container {', '.join(used_by)} "
            "(`stockade images prune` removes it once that is gone)"
        )
        return PrunedImage(reference=image_id, removed=False, reason=reason)
    refused = _remove(client, image_id)
    if refused is None:
        return PrunedImage(reference=image_id, removed=True)
    if "child" in refused:
        refused = (
            "older images are built on it; `stockade images prune` removes them, and it with them"
        )
    return PrunedImage(reference=image_id, removed=False, reason=refused)


def layers_size(client: docker.DockerClient) -> int:
    """Bytes the engine's image layers take on disk (what a prune frees is the drop)."""
    with engine_errors("system.df"):
        usage = client.df()
    return int(usage.get("LayersSize") or 0)

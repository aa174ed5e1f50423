"""`stockade images prune`: old images go, current ones and those in use stay."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from orchestrator.sandbox.image_prune import (
    StaleImage,
    remove_stale,
    remove_superseded,
    stale_images,
)
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE

pytestmark = pytest.mark.docker

_LABEL = f"LABEL {PLATFORM_LABEL}={PLATFORM_VALUE}"


def _empty_rootfs() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w"):
        pass
    return data.getvalue()


class _Fakes:
    """Images that look like an old build (no files: nothing is pulled or run)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.suffix = f"prune-test-{uuid.uuid4().hex[:8]}"
        self.images: list[str] = []
        self.containers: list[str] = []

    def imported(self, name: str, *, ours: bool = True) -> str:
        reference = f"{name}:{self.suffix}"
        repository, tag = reference.split(":")
        changes = [_LABEL] if ours else []
        self.client.api.import_image_from_data(
            _empty_rootfs(), repository=repository, tag=tag, changes=changes
        )
        self.images.append(reference)
        return reference

    def built_on(self, parent: str, name: str) -> str:
        reference = f"{name}:{self.suffix}"
        dockerfile = f"FROM {parent}\nLABEL org.stockade.test=child\n".encode()
        self.client.images.build(fileobj=io.BytesIO(dockerfile), tag=reference, rm=True)
        self.images.insert(0, reference)
        return reference

    def used(self, reference: str) -> str:
        container = self.client.containers.create(reference, ["true"], network_mode="none")
        self.containers.append(str(container.id))
        return str(container.id)[:12]

    def stale(self, keep: set[str]) -> list[StaleImage]:
        """What :func:`stale_images` lists of this test's images (other tests' are left be)."""
        found = stale_images(self.client, keep)
        return [image for image in found if image.reference.endswith(self.suffix)]

    def exists(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True

    def cleanup(self) -> None:
        for container in self.containers:
            self.client.api.remove_container(container, force=True)
        for reference in self.images:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.remove(reference, force=True)


@pytest.fixture
def fakes(docker_client: docker.DockerClient) -> Iterator[_Fakes]:
    made = _Fakes(docker_client)
    try:
        yield made
    finally:
        made.cleanup()


def test_old_images_go_children_first_and_those_in_use_stay(fakes: _Fakes) -> None:
    base = fakes.imported("stockade-base")
    tools = fakes.built_on(base, "stockade-tools")
    in_use = fakes.imported("stockade-sandbox")
    container = fakes.used(in_use)
    kept = fakes.imported("stockade-tools-kept")
    foreign = fakes.imported("stockade-foreign", ours=False)

    stale = fakes.stale({kept})
    references = [image.reference for image in stale]
    assert set(references) == {base, tools, in_use}, "kept and unlabelled images are not listed"
    assert references.index(tools) < references.index(base), "a child goes before its parent"
    assert next(i for i in stale if i.reference == in_use).used_by == (container,)

    results = {result.reference: result for result in remove_stale(fakes.client, stale)}
    assert results[tools].removed and results[base].removed
    assert not results[in_use].removed
    assert results[in_use].reason == f"used by container {container}"
    assert not fakes.exists(tools) and not fakes.exists(base)
    assert fakes.exists(in_use) and fakes.exists(kept) and fakes.exists(foreign)


def test_a_kept_parent_stays_when_its_stale_child_goes(fakes: _Fakes) -> None:
    base = fakes.imported("stockade-base")
    child = fakes.built_on(base, "stockade-sandbox")
    stale = fakes.stale({base})
    assert [i.reference for i in stale] == [child]
    assert remove_stale(fakes.client, stale)[0].removed
    assert fakes.exists(base) and not fakes.exists(child)


def test_a_stale_parent_of_a_kept_image_loses_its_tag_not_its_layers(fakes: _Fakes) -> None:
    base = fakes.imported("stockade-base")
    child = fakes.built_on(base, "stockade-sandbox")
    stale = fakes.stale({child})
    assert [i.reference for i in stale] == [base]
    assert remove_stale(fakes.client, stale)[0].removed
    assert not fakes.exists(base)
    assert fakes.exists(child), "the kept image keeps the layers it stands on"
    untagged_parent = fakes.stale({child})
    assert untagged_parent == [], "an untagged parent is not listed: it goes with its child"


def _refreshed(fakes: _Fakes, reference: str) -> str:
    """``reference`` put on a new image, as ``images build --refresh-base`` does; the old id."""
    old = str(fakes.client.images.get(reference).id)
    fakes.images.append(old)  # removed after the test if it is still there
    fakes.imported(reference.partition(":")[0])
    assert fakes.client.images.get(reference).id != old
    return old


def test_a_superseded_base_goes_with_the_last_stale_image_built_on_it(fakes: _Fakes) -> None:
    base = fakes.imported("stockade-base")
    sandbox = fakes.built_on(base, "stockade-sandbox")
    old = _refreshed(fakes, base)
    kept = remove_superseded(fakes.client, old)
    assert not kept.removed and kept.reason == (
        "older images are built on it; `stockade images prune` removes them, and it with them"
    )
    ours = {old, str(fakes.client.images.get(sandbox).id)}
    stale = [image for image in stale_images(fakes.client, {base}) if image.image_id in ours]
    assert [image.reference for image in stale] == [sandbox], "the untagged base goes with it"
    assert remove_stale(fakes.client, stale)[0].removed
    assert not fakes.exists(sandbox) and not fakes.exists(old) and fakes.exists(base)


def test_an_untagged_stockade_image_is_listed_by_its_id_and_removed(fakes: _Fakes) -> None:
    # A superseded base that a container kept when it was refreshed, the container gone since.
    base = fakes.imported("stockade-base")
    old = _refreshed(fakes, base)
    stale = [image for image in stale_images(fakes.client, {base}) if image.image_id == old]
    assert [image.reference for image in stale] == [old]
    assert remove_stale(fakes.client, stale)[0].removed
    assert not fakes.exists(old)


def test_a_superseded_image_is_removed_only_when_nothing_uses_or_names_it(fakes: _Fakes) -> None:
    base = fakes.imported("stockade-base")
    container = fakes.used(base)
    old = _refreshed(fakes, base)
    used = remove_superseded(fakes.client, old)
    assert not used.removed and used.reason is not None
    assert used.reason.startswith(f"used by container {container} ")
    fakes.client.api.remove_container(fakes.containers.pop(), force=True)
    named = f"stockade-test-named:{fakes.suffix}"
    fakes.client.images.get(old).tag(named)
    fakes.images.insert(0, named)
    assert remove_superseded(fakes.client, old).reason == f"still tagged {named}"
    fakes.client.images.remove(named)
    assert remove_superseded(fakes.client, old).removed
    assert not fakes.exists(old) and fakes.exists(base)


def test_cli_dry_run_lists_old_images_never_the_current_ones(
    fakes: _Fakes, images: ImageBuilder, tmp_path: Path
) -> None:
    old = fakes.imported("stockade-tools")
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "images", "prune", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = {entry["image"] for entry in json.loads(done.stdout)}
    assert old in listed
    current = images.current_tags()
    assert images.resolve("stockade-tools") in current
    assert images.resolve("stockade-sandbox") in current
    assert not listed & current
    assert fakes.exists(old), "a dry run removes nothing"

"""``images build --refresh-base``: bases built again from what is published now, same tag.

A base is tagged by the hash of its inputs, not of its packages' versions, so
without a refresh the security updates Debian publishes after a base was built
never reach the sandboxes. One test here is real end to end (a debootstrap,
its updates, the images on it: about two minutes); the others use stand-ins
that are never run (nothing is pulled: the "registry" is a closed port on
127.0.0.1).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from orchestrator.config import load_config
from orchestrator.platform import image_builder
from orchestrator.sandbox.image_prune import remove_stale, stale_images
from orchestrator.sandbox.images import TOOLS_PACKAGES, BuiltImage, ImageBuilder
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE, container_labels

pytestmark = pytest.mark.docker

REGISTRY = "127.0.0.1:9"
"""Nothing listens there: a pull fails at once, and nothing leaves the machine."""


class _Made:
    """What a test made, removed after it: its containers, then the tags it put on images
    (an image the session uses only loses the tag), then its own images, by id."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.suffix = f"refresh-test-{uuid.uuid4().hex[:8]}"
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.containers: list[str] = []

    def imported(self, reference: str, *, ours: bool = True) -> str:
        """An image with no files under ``reference`` (never run); its id."""
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w"):
            pass
        repository, _, tag = reference.rpartition(":")
        changes = [f"LABEL {PLATFORM_LABEL}={PLATFORM_VALUE}"] if ours else []
        self.client.api.import_image_from_data(
            data.getvalue(), repository=repository, tag=tag, changes=changes
        )
        return self.own(reference)

    def built_on(self, parent: str, reference: str) -> str:
        """A one-layer child of ``parent`` under ``reference``; its id."""
        dockerfile = f"FROM {parent}\nLABEL org.stockade.test=old\n".encode()
        self.client.images.build(fileobj=io.BytesIO(dockerfile), tag=reference, rm=True)
        return self.own(reference)

    def own(self, reference: str) -> str:
        """The image ``reference`` names now is this test's: tag and image go after it."""
        image_id = str(self.client.images.get(reference).id)
        self.tagged(reference)
        self.ids.insert(0, image_id)  # the last made goes first
        return image_id

    def tagged(self, reference: str) -> None:
        """This test put the tag ``reference`` on an image (perhaps the session's)."""
        self.tags.insert(0, reference)

    def container(self, reference: str) -> str:
        labels = container_labels("test", lifetime_s=120)
        created = self.client.containers.create(reference, ["true"], labels=labels)
        self.containers.append(str(created.id))
        return str(created.id)[:12]

    def exists(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True

    def cleanup(self) -> None:
        for container in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(container, force=True)
        for reference in self.tags:
            # Never forced: an image others also name only loses this tag.
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                self.client.images.remove(reference)
        for image_id in self.ids:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.remove(image_id, force=True)


@pytest.fixture
def made(docker_client: docker.DockerClient) -> Iterator[_Made]:
    images = _Made(docker_client)
    try:
        yield images
    finally:
        images.cleanup()


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def test_a_registry_base_that_cannot_be_pulled_again_is_kept_as_it_is(
    docker_client: docker.DockerClient, made: _Made
) -> None:
    reference = f"{REGISTRY}/stockade-test/python:{made.suffix}"
    local = made.imported(reference, ours=False)
    progress: list[str] = []
    builder = ImageBuilder(
        docker_client, base_image=reference, refresh_base=True, progress=progress.append
    )
    tag = builder.base_tag()
    old = made.imported(tag)  # what an earlier pull left under the tag, in use by a container
    container = made.container(tag)

    base = builder.build_base()
    assert (base.tag, base.image_id, base.built) == (tag, local, True)
    assert f"pulling {reference}" in progress
    kept = f"the local {reference} is kept as it is, with the packages it was built with"
    assert [line for line in progress if line.startswith(f"cannot pull {reference} (")
            and line.endswith(kept)], progress  # fmt: skip
    superseded = f"kept the superseded {tag} (image {short(old)}): used by container {container}"
    assert [line for line in progress if line.startswith(superseded)], progress
    assert made.exists(old), "never forced"

    progress.clear()
    again = builder.build_base()
    assert not again.built and again.image_id == local
    assert progress == [], "a builder refreshes each base once"
    shown: list[str] = []
    refreshed = ImageBuilder(
        docker_client, base_image=reference, refresh_base=True, progress=shown.append
    ).build_base()
    assert not refreshed.built and refreshed.image_id == local
    assert shown[-1].startswith(f"{tag} is unchanged")
    quiet: list[str] = []
    ImageBuilder(docker_client, base_image=reference, progress=quiet.append).build_base()
    assert quiet == [], "without a refresh, a registry base at hand is not pulled"


def _installed(client: docker.DockerClient, tag: str) -> dict[str, str]:
    """Each Debian package installed in ``tag``: its version."""
    listing = client.containers.run(
        tag, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"], network_mode="none",
        remove=True, labels=container_labels("test", lifetime_s=60),
    )  # fmt: skip
    return dict(line.split(" ", 1) for line in bytes(listing).decode().splitlines())


def _debian_versions(packages: list[str], suite: str) -> dict[str, list[str]]:
    """Each package's versions in the host's apt lists of ``suite``, its -updates and -security
    (not another source's: the host's own nodejs may come from elsewhere)."""
    said = subprocess.run(
        ["apt-cache", "policy", *packages], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    suites = {suite, f"{suite}-updates", f"{suite}-security"}
    found: dict[str, list[str]] = {}
    package = version = ""
    for line in said.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            package = line[:-1]
        elif entry := re.fullmatch(r"\s+(?:\*\*\* )?(\S+) -?\d+", line):
            version = entry.group(1)
        elif (source := re.fullmatch(r"\s+-?\d+ \S+ (\S+)/\S+ .*", line)) and (
            source.group(1) in suites
        ):
            found.setdefault(package, []).append(version)
    return found


def _older(version: str, than: str) -> bool:
    compared = subprocess.run(["dpkg", "--compare-versions", version, "lt", than], check=False)
    return compared.returncode == 0


def test_refresh_base_builds_the_bases_again_with_debians_updates_and_the_images_on_them(
    docker_client: docker.DockerClient, images: ImageBuilder, made: _Made, tmp_path: Path
) -> None:
    # Image sources of this test's own (the script's text is an input of the bases' tags):
    # the session's images are not touched while other tests use them.
    sources = tmp_path / "images"
    shutil.copytree(Path(__file__).resolve().parents[2] / "sandbox_images", sources)
    with (sources / "base" / "build-rootfs.sh").open("a") as script:
        script.write("\n# bases of the refresh test's own\n")
    # The plain base comes from a "registry" that cannot be reached; the tools base
    # from Debian, as it always does.
    reference = f"{REGISTRY}/stockade-test/python:{made.suffix}"
    docker_client.images.get(images.base_tag()).tag(reference)
    made.tagged(reference)
    state = tmp_path / "state"
    state.mkdir()
    # The session's caches (its resolutions, wheels and Debian packages): nothing is
    # downloaded again that they hold.
    (state / "cache").symlink_to(Path.home() / ".cache" / "stockade", target_is_directory=True)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        json.dumps({"state_dir": str(state), "images": {"sources": str(sources),
                                                        "base_image": reference}})
    )  # fmt: skip
    builder = image_builder(load_config(config).config, docker_client)
    plain, tools_base = builder.base_tag(), builder.base_tag(TOOLS_PACKAGES)
    # What bases built some time ago left: the plain base's tag on an older image, and the
    # tools base's with a sandbox image built on it.
    plain_old = made.imported(plain)
    tools_old = made.built_on(images.base_tag(TOOLS_PACKAGES), tools_base)
    sandbox_old = builder.build_sandbox(
        BuiltImage(name="stockade-base", tag=tools_base, image_id=tools_old, built=False, seconds=0)
    )
    made.own(sandbox_old.tag)

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "images", "build", "--refresh-base", "--json",
         "--config", str(config)],
        capture_output=True, text=True, timeout=900, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")},
    )  # fmt: skip
    # What it built is this test's (the plain base's tag now names the session's base).
    for tag in re.findall(r"^\s*(?:built|refreshed) (\S+) in ", done.stderr, re.MULTILINE):
        if tag == plain:
            made.tagged(tag)
        else:
            made.own(tag)
    assert done.returncode == 0, done.stderr
    built = {image["tag"]: image for image in json.loads(done.stdout)}
    shown = done.stderr

    # The registry base is kept as it is; the tag that pointed elsewhere follows it.
    assert f"cannot pull {reference}" in shown and "is kept as it is" in shown
    assert built[plain]["image_id"] == docker_client.images.get(reference).id
    assert f"removed the superseded {plain} (image {short(plain_old)})" in shown
    assert not made.exists(plain_old), "nothing was built on it: it is gone"
    # The tools base is built again from Debian, its updates applied, under the same tag.
    assert re.search(rf"refreshing {re.escape(tools_base)} from what is published now", shown)
    assert "bookworm-updates, bookworm-security" in shown and "updates applied: " in shown
    refreshed = built[tools_base]["image_id"]
    assert built[tools_base]["built"] and refreshed != tools_old
    assert docker_client.images.get(tools_base).id == refreshed
    kept = (
        f"kept the superseded {tools_base} (image {short(tools_old)}): older images are built "
        "on it; `stockade images prune` removes them, and it with them"
    )
    assert kept in shown
    # Every package is as new as the host's apt lists know it, security updates included.
    versions = _installed(docker_client, tools_base)
    suite = subprocess.run(
        ["bash", str(sources / "base" / "build-rootfs.sh"), "--suite"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    published = _debian_versions(sorted(versions), suite)
    assert "libc6" in published, "the host's apt lists know the suite"
    behind = {
        package: (versions[package], newer)
        for package, listed in published.items()
        if (newer := [version for version in listed if _older(versions[package], version)])
    }
    assert behind == {}, "packages older than Debian's updates"
    # What stands on it is built again, with new tags.
    new_sandbox = builder.sandbox_tag(refreshed)
    assert new_sandbox != sandbox_old.tag and built[new_sandbox]["built"]
    assert built[builder.tools_tag(built[new_sandbox]["image_id"])]["built"]

    # The old sandbox image is stale; pruning it takes the superseded base with it.
    keep = builder.current_tags()
    assert {plain, tools_base, new_sandbox} <= keep and sandbox_old.tag not in keep
    stale = [
        image
        for image in stale_images(docker_client, keep)
        if image.image_id in {sandbox_old.image_id, tools_old}
    ]
    assert sandbox_old.tag in [image.reference for image in stale]
    assert all(result.removed for result in remove_stale(docker_client, stale))
    assert not made.exists(sandbox_old.image_id) and not made.exists(tools_old)

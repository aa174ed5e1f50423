"""Images are tagged by a hash of their inputs and rebuilt only when those change."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import docker
import pytest

from orchestrator.sandbox.images import TOOLS_PACKAGES, ImageBuilder
from orchestrator.sandbox.labels import container_labels

pytestmark = pytest.mark.docker


def test_second_build_changes_nothing(
    docker_client: docker.DockerClient, images: ImageBuilder
) -> None:
    began = time.monotonic()
    built = ImageBuilder(docker_client).build_all()
    assert not [image.tag for image in built if image.built]
    assert time.monotonic() - began < 10
    base, sandbox, tools_base, tools_sandbox, tools = built
    assert sandbox.tag == images.resolve("stockade-sandbox")
    assert sandbox.tag == images.sandbox_tag(base.image_id), "the tag is the hash of the inputs"
    assert tools_base.tag == images.base_tag(TOOLS_PACKAGES) != base.tag, (
        "nodejs: a base of its own"
    )
    assert tools_sandbox.tag == images.sandbox_tag(tools_base.image_id)
    assert tools.tag == images.resolve("stockade-tools") == images.tools_tag(tools_sandbox.image_id)


def test_tools_image_has_node_and_wheels_installed_not_unzipped(
    docker_client: docker.DockerClient, images: ImageBuilder
) -> None:
    script = (
        "node --version; ls /usr/local/bin; cat /opt/stockade/lib/numpy-*.dist-info/INSTALLER;"
        " ls /opt/stockade/lib | grep -c '[.]data$'; head -c 19 /usr/local/bin/f2py"
    )
    output = docker_client.containers.run(
        images.resolve("stockade-tools"), ["sh", "-c", script], network_mode="none", remove=True,
        labels=container_labels("test", lifetime_s=60),
    )  # fmt: skip
    lines = bytes(output).decode().splitlines()
    assert lines[0].startswith("v"), "nodejs, from the same bootstrap as Python"
    assert "f2py" in lines and "tabulate" in lines, "the wheels' console scripts"
    assert lines[-3:] == ["stockade", "0", "#!/usr/bin/python3"]


def test_changed_input_rebuilds_only_what_depends_on_it(
    docker_client: docker.DockerClient, images: ImageBuilder, tmp_path: Path
) -> None:
    source = images.resolve("stockade-sandbox")
    copy = tmp_path / "sandbox_images"
    shutil.copytree(Path(__file__).resolve().parents[2] / "sandbox_images", copy)
    with (copy / "sandbox" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("\n# a change to the inputs\n")
    changed = ImageBuilder(docker_client, images_dir=copy)
    base = changed.build_base()
    sandbox = changed.build_sandbox(base)
    try:
        assert not base.built, "the base does not depend on the sandbox Dockerfile"
        assert sandbox.built
        assert sandbox.tag != source
        image = docker_client.images.get(sandbox.tag)
        assert image.labels["org.stockade.platform"] == "stockade"
        assert image.attrs["Config"]["User"] == "10001:10001"
    finally:
        docker_client.images.remove(sandbox.tag, force=True)


def test_registry_base_image_is_used_when_present_locally(
    docker_client: docker.DockerClient, images: ImageBuilder
) -> None:
    # Stands in for a registry image such as python:3.12-slim: it is present
    # locally, so nothing is pulled (no registry is ever contacted in tests).
    local = "stockade-test/python:local"
    docker_client.images.get(images.base_tag()).tag(local)
    builder = ImageBuilder(docker_client, base_image=local)
    try:
        base = builder.build_base()
        assert base.built
        assert base.seconds < 10, "no debootstrap when the base image is at hand"
        assert base.tag != images.base_tag(), "the base source is part of the input hash"
        assert base.image_id == docker_client.images.get(local).id
    finally:
        docker_client.images.remove(local, force=True)
        docker_client.images.remove(builder.base_tag(), force=True)


def test_tools_image_tag_follows_toolkit_sources(
    docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An organisation's toolkit, importable from anywhere: its sources are image inputs.
    package = tmp_path / "acme_kit"
    package.mkdir()
    (package / "__init__.py").write_text("from stockade_sdk import tool\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    builder = ImageBuilder(docker_client, toolkits=("acme_kit",))
    before = builder.tools_tag("sha256:sandbox")
    assert before == builder.tools_tag("sha256:sandbox"), "the tag is a pure function of the inputs"
    assert before != ImageBuilder(docker_client).tools_tag("sha256:sandbox")
    with (package / "__init__.py").open("a") as source:
        source.write("\n# changed\n")
    assert builder.tools_tag("sha256:sandbox") != before
    assert builder.tools_tag("sha256:other-sandbox") != builder.tools_tag("sha256:sandbox")

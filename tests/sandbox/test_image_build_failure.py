"""A Docker build that fails leaves none of its steps' images behind (a real engine)."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from orchestrator.errors import InfrastructureError
from orchestrator.sandbox._image_steps import docker_build
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE

pytestmark = pytest.mark.docker


def test_a_failed_build_leaves_no_images_of_the_steps_it_finished(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex  # no step of an earlier run is reused from the engine's cache
    marker = f"org.stockade.test-run={run}"
    (tmp_path / "payload").write_bytes(b"x" * 1024)
    # Needs no base image nor shell: scratch, and a COPY of a file the context lacks.
    (tmp_path / "Dockerfile").write_text(
        f"FROM scratch\nLABEL {PLATFORM_LABEL}=building {marker}\n"
        "COPY payload /payload\nCOPY missing /missing\n"
    )
    steps: list[str] = []
    try:
        with pytest.raises(InfrastructureError, match="failed") as caught:
            docker_build(
                docker_client,
                tmp_path,
                tag=f"stockade-test-failed-build:{run[:12]}",
                buildargs={},
                labels={PLATFORM_LABEL: PLATFORM_VALUE},
                progress=steps.append,
            )
        assert "missing" in str(caught.value)
        assert any("COPY payload" in step for step in steps), "the steps before it ran"
        left = docker_client.api.images(all=True, quiet=True, filters={"label": marker})
        assert left == [], "the finished steps' images are removed"
    finally:
        for image in docker_client.api.images(all=True, quiet=True, filters={"label": marker}):
            docker_client.api.remove_image(image, force=True)

"""The test cluster's own commands, without forming it (the cluster itself: ``tests/cluster``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.testing.ray_cluster import RayCluster, RayNode


def test_the_token_reaches_ray_start_through_a_private_file_not_its_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A command line is world-readable (``ps``, ``/proc/<pid>/cmdline``); the cluster's
    token is as good as root on every node."""
    started: list[list[str]] = []

    def run(argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        started.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    cluster = RayCluster(root=tmp_path, token="f00d" * 16)
    node = RayNode("host-a", "ns1", "10.77.0.1", tmp_path / "r1", "unix:///var/run/docker.sock")
    cluster._start_ray(node, head=True)
    (argv,) = started
    assert not any(cluster.token in part for part in argv), argv
    assert "RAY_AUTH_MODE=token" in argv and f"DOCKER_HOST={node.docker_host}" in argv
    (path,) = [part.split("=", 1)[1] for part in argv if part.startswith("RAY_AUTH_TOKEN_PATH=")]
    assert Path(path).read_text() == cluster.token
    assert Path(path).stat().st_mode & 0o777 == 0o600

"""A sandbox host's own logic, without a cluster: engine trouble and hostile replies (issue 14).

The host actor's body (:class:`SandboxHost`) is an ordinary class; these tests
build it around a Docker client that reaches no engine, or drive its relay
with a scripted container stream, so they need neither Ray nor Docker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest

from orchestrator.sandbox import ray_host
from orchestrator.sandbox.hosts import state_of, view
from orchestrator.sandbox.ray_host import SandboxHost


@pytest.fixture
def host_without_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHost]:
    """A host whose engine is down: its socket does not exist (fixed API version: the
    client asks nothing when made)."""
    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    monkeypatch.setattr(ray_host, "engine_client", lambda: client)
    monkeypatch.setattr(ray_host, "_node_id", lambda: "node-1")
    monkeypatch.setattr(ray_host, "token_authentication", lambda: (True, True))
    yield SandboxHost("host-x")
    client.close()


async def test_a_host_whose_engine_is_down_describes_itself_as_lost(
    host_without_engine: SandboxHost,
) -> None:
    """Its record still comes (the orchestrator renews its lease with it and reads it), says
    the engine does not answer, and makes the host lost: placement sends it nothing."""
    record = json.loads(await host_without_engine.describe("a" * 32))
    assert "engine does not answer" in record["engine_error"]
    assert state_of(record) == "lost"
    seen = view("host-x", record)
    assert seen.state == "lost" and "engine does not answer" in seen.reason

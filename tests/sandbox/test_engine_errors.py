"""No exception of the Docker SDK or its HTTP client escapes a public call of the sandbox layer."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests.sessions

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox.engine import connect_engine
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.reaper import reap

# The SDK's Unix-socket connection leaks its socket when connecting fails (the
# socket file is missing); that is the SDK's leak, found by the GC later.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def dead_engine(tmp_path: Path) -> Iterator[docker.DockerClient]:
    """A client of an engine that is not there (a socket nobody serves)."""
    client = docker.DockerClient(
        base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41", timeout=5
    )
    yield client
    client.close()
    gc.collect()  # the SDK's leaked socket is found here, under this module's filter


@pytest.mark.parametrize(
    "call",
    [
        lambda client: ImageBuilder(client).resolve("stockade-tools"),
        lambda client: ImageBuilder(client).image_id("stockade-sandbox:0"),
        lambda client: ImageBuilder(client).build_base(),
        reap,
    ],
    ids=["resolve", "image_id", "build_base", "reap"],
)
def test_a_dead_engine_is_an_infrastructure_error(
    dead_engine: docker.DockerClient, call: Callable[[docker.DockerClient], Any]
) -> None:
    with pytest.raises(InfrastructureError) as caught:
        call(dead_engine)
    assert caught.value.code is ErrorCode.ENGINE_UNAVAILABLE
    assert caught.value.retryable
    assert "scripts/setup.sh" in str(caught.value)


def test_connect_engine_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(InfrastructureError) as caught:
        connect_engine(timeout_s=5)
    gc.collect()
    assert caught.value.code is ErrorCode.ENGINE_UNAVAILABLE
    assert caught.value.op == "engine.connect"


@pytest.mark.docker
def test_the_engine_client_reads_neither_proxy_variables_nor_netrc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # requests would scan the environment for proxies and look for .netrc on
    # every request: CPU spent on every engine call for nothing.
    consulted: list[str] = []

    def proxies(*_args: object, **_kwargs: object) -> dict[str, str]:
        consulted.append("proxies")
        return {}

    def netrc(*_args: object, **_kwargs: object) -> None:
        consulted.append("netrc")

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", proxies)
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", netrc)
    client = connect_engine()
    consulted.clear()  # the SDK asks the engine's version as it is made, before the setting
    try:
        assert client.ping()
        client.api.containers(limit=1)
    finally:
        client.close()
    assert consulted == []
    plain = docker.from_env()  # the SDK's default, for contrast: it does consult them
    consulted.clear()
    try:
        plain.ping()
    finally:
        plain.close()
    assert "proxies" in consulted

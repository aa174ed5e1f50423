"""http.fetch through the egress proxy, against a server on 127.0.0.1 only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.gateway import Gateway
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing import FixedResolver, HttpRequest, LoopbackOnlyConnector, serve_http
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = pytest.mark.docker


def echo(request: HttpRequest) -> tuple[int, bytes]:
    reply = {
        "method": request.method,
        "path": request.path,
        "body": request.body.decode(),
        "x": request.headers.get("x-test"),
    }
    return (201 if request.method == "POST" else 200), json.dumps(reply).encode()


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    with serve_http(echo) as port:
        yield port


@pytest.fixture
async def gateway(
    docker_client: docker.DockerClient,
    images: ImageBuilder,
    no_leaks: None,
    tmp_path: Path,
    origin: int,
) -> AsyncIterator[Gateway]:
    http = {
        "pool_size": 0,
        "loosen": ["egress"],
        "egress": {"allow": [f"127.0.0.1:{origin}"], "allow_networks": ["127.0.0.1/32"]},
    }
    resolver, connector = FixedResolver(), LoopbackOnlyConnector()
    gates = EgressGates(resolver=resolver, connector=connector)
    backend = DockerBackend(docker_client, images=images, reap_on_start=False, egress_gates=gates)
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.http",), profiles={"http": http}, backend=backend
    ) as platform:
        yield platform.gateway
    assert connector.violations == [] and resolver.unknown == []


async def test_fetch_allowed_host(gateway: Gateway, origin: int) -> None:
    arguments = {
        "url": f"http://127.0.0.1:{origin}/hello?x=1",
        "method": "POST",
        "body": "ping",
        "headers": {"X-Test": "yes"},
    }
    result = await gateway.call(ToolCall(id="h", name="http.fetch", arguments=arguments))
    assert result.status is ToolStatus.OK, result
    assert [(event.host, event.allowed) for event in result.egress] == [("127.0.0.1", True)]
    response = json.loads(result.output)
    assert response["status"] == 201
    assert json.loads(response["body"]) == {
        "method": "POST",
        "path": "/hello?x=1",
        "body": "ping",
        "x": "yes",
    }


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{other}/", "http://10.0.0.1/", "https://blocked.invalid/"]
)
async def test_fetch_refused(gateway: Gateway, origin: int, url: str) -> None:
    call = ToolCall(id="h", name="http.fetch", arguments={"url": url.format(other=origin + 1)})
    result = await gateway.call(call)
    if url.startswith("https"):
        # CONNECT refused: urllib raises instead of returning the 403; the model reads
        # who refused and why in one line, not urllib's traceback.
        assert result.status is ToolStatus.ERROR
        assert result.error == (
            f"could not fetch {url}: the egress proxy refused it (the host is not in "
            "the allowlist, or resolves to a refused address)"
        )
    else:
        response = json.loads(result.output)
        assert response["status"] == 403
        assert response["headers"]["X-Stockade-Egress"] == "refused"


async def test_fetch_rejects_other_schemes(gateway: Gateway) -> None:
    result = await gateway.call(
        ToolCall(id="h", name="http.fetch", arguments={"url": "file:///etc/passwd"})
    )
    assert result.status is ToolStatus.ERROR
    assert result.error == "only http:// and https:// URLs can be fetched, got 'file:///etc/passwd'"


@pytest.mark.parametrize(("timeout_s", "error"), [(1e12, None), (-1, "a positive number")])
async def test_fetch_timeout_beyond_any_wait(
    gateway: Gateway, origin: int, timeout_s: float, error: str | None
) -> None:
    """A socket takes no timeout past ~290 years: 1e12 s was an OverflowError traceback."""
    arguments = {"url": f"http://127.0.0.1:{origin}/a", "timeout_s": timeout_s}
    result = await gateway.call(ToolCall(id="h", name="http.fetch", arguments=arguments))
    if error is None:
        assert result.status is ToolStatus.OK, result
        assert json.loads(result.output)["status"] == 200
    else:
        assert result.status is ToolStatus.ERROR
        assert result.error == f"timeout_s must be {error} of seconds, got -1.0"

"""Egress from inside real sandboxes: ordinary urllib through HTTP(S)_PROXY, nothing else.

The only server is on the host's 127.0.0.1; the proxy's connector fails the
test before connecting anywhere else, and its resolver knows only test names.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import Runtime, SandboxProfile
from orchestrator.testing import FETCH, FixedResolver, LoopbackOnlyConnector, serve_http

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    with serve_http(lambda request: (200, b"hello sandbox")) as port:
        yield port


@pytest.fixture
async def egress_backend(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None, gates_root: Path
) -> AsyncIterator[DockerBackend]:
    resolver = FixedResolver({"private.test": ["10.9.8.7"]})
    connector = LoopbackOnlyConnector()
    gates = EgressGates(gates_root, resolver=resolver, connector=connector)
    async with DockerBackend(
        docker_client, images=images, reap_on_start=False, egress_gates=gates
    ) as backend:
        yield backend
    assert connector.violations == [], "the proxy tried to connect beyond loopback"
    assert resolver.unknown == [], "the proxy resolved a name it should have refused first"
    assert list(gates_root.iterdir()) == [], "the closed backend left its gates' directory"


def test_egress_must_be_named_as_a_loosening() -> None:
    with pytest.raises(ValueError, match="egress"):
        SandboxProfile(egress=EgressPolicy(allow=("example.com",)))


async def test_allowed_host_reachable_everything_else_refused(
    egress_backend: DockerBackend, runtime: Runtime, origin: int
) -> None:
    profile = SandboxProfile(
        name=f"egress-{runtime}",
        runtime=runtime,
        pool_size=0,
        egress=EgressPolicy(
            allow=(f"127.0.0.1:{origin}", "*.test", "10.0.0.1"),
            allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
        ),
        loosen=frozenset({"egress"}),
    )
    urls = [
        f"http://127.0.0.1:{origin}/",  # allowed
        f"http://127.0.0.1:{origin + 1}/",  # another port
        "http://elsewhere.invalid/",  # another host
        "http://10.0.0.1/",  # an IP literal in a private range
        "http://private.test/",  # a name resolving to a private address
    ]
    result = await egress_backend.execute(
        ExecRequest(argv=("python3", "-c", textwrap.dedent(FETCH), *urls)), profile
    )
    assert result.status is ExecStatus.OK, result
    lines = result.stdout.splitlines()
    assert lines[0] == f"{urls[0]} 200 hello sandbox"
    for line in lines[1:]:
        assert line.endswith(" 403 refused"), line
    allowed = [event for event in result.egress if event.allowed]
    refused = [event for event in result.egress if not event.allowed]
    assert [(e.host, e.port) for e in allowed] == [("127.0.0.1", origin)]
    assert len(refused) == 4


async def test_https_connect_to_a_refused_host(
    egress_backend: DockerBackend, runtime: Runtime
) -> None:
    profile = SandboxProfile(
        runtime=runtime,
        pool_size=0,
        egress=EgressPolicy(allow=("allowed.test:443",)),
        loosen=frozenset({"egress"}),
    )
    code = "import urllib.request\nurllib.request.urlopen('https://blocked.invalid/', timeout=10)"
    result = await egress_backend.execute(ExecRequest(argv=("python3", "-c", code)), profile)
    assert result.status is ExecStatus.ERROR
    assert "403" in result.stderr
    assert [(e.host, e.allowed) for e in result.egress] == [("blocked.invalid", False)]


async def test_without_egress_there_is_no_proxy_and_no_socket(
    egress_backend: DockerBackend, runtime: Runtime
) -> None:
    profile = SandboxProfile(runtime=runtime, pool_size=0)
    result = await egress_backend.execute(
        ExecRequest(
            argv=(
                "sh",
                "-c",
                "env | grep -ci proxy; [ -e /run/stockade ] && echo present || echo absent",
            )
        ),
        profile,
    )
    assert result.stdout.splitlines() == ["0", "absent"]

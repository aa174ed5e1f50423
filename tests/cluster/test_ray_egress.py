"""Egress from sandboxes on Ray hosts: each host runs the proxy of its own containers.

The only origin is an HTTP server this test starts on the head's address inside
the cluster's network namespace (never the machine's own interface); the
profile allows exactly it. Both hosts reach it through their own proxy (the
second over the namespaces' veth pair); every other destination is refused by
the proxy before anything is resolved or connected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest

from orchestrator.errors import ConfigError
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing import FETCH
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(600)]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the head"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def origin(cluster: RayCluster) -> Iterator[tuple[str, int]]:
    """An HTTP server on the head's namespace address (this thread is in that namespace)."""
    address = cluster.nodes[0].address
    server = ThreadingHTTPServer((address, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield address, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_egress_reaches_the_allowlisted_origin_from_both_hosts(
    cluster: RayCluster,
    origin: tuple[str, int],
    docker_client: docker.DockerClient,
    second_engine: docker.DockerClient,
) -> None:
    address, port = origin
    profile = SandboxProfile(
        name="ray-egress",
        pool_size=0,
        timeout_s=30,
        egress=EgressPolicy(
            allow=(f"{address}:{port}",),
            allow_networks=(ipaddress.ip_network(f"{address}/32"),),
        ),
        loosen=frozenset({"egress"}),
    )
    urls = [
        f"http://{address}:{port}/",  # allowed
        f"http://{address}:{port + 1}/",  # another port of the same address
        "http://elsewhere.invalid/",  # another host: refused before resolving
    ]
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE])
    await backend.start()
    try:
        # Sent together, the calls are spread over both hosts (least in flight first).
        results = await asyncio.gather(
            *(
                backend.execute(
                    ExecRequest(argv=("python3", "-c", textwrap.dedent(FETCH), *urls)), profile
                )
                for _ in range(4)
            )
        )
        served = {name: host.served for name, host in backend.hosts.items()}
        assert served["host-a"] and served["host-b"], served
        for result in results:
            assert result.status is ExecStatus.OK, result
            lines = result.stdout.splitlines()
            assert lines[0] == f"{urls[0]} 200 hello from the head", result.stdout
            for line in lines[1:]:
                assert line.endswith(" 403 refused"), line
            # The host's proxy reported each connection; the orchestrator checked them.
            assert [(e.host, e.port, e.allowed) for e in result.egress] == [
                (address, port, True),
                (address, port + 1, False),
                ("elsewhere.invalid", 80, False),
            ]
        # A call without egress gets neither a proxy nor a socket on the host.
        closed = SandboxProfile(name="ray-closed", pool_size=0, timeout_s=30)
        result = await backend.execute(
            ExecRequest(argv=("python3", "-c", textwrap.dedent(FETCH), urls[0])), closed
        )
        assert " error " in result.stdout and result.egress == ()
    finally:
        await backend.close()
    label = f"{BACKEND_LABEL}={backend.instance_id}"
    for engine in (docker_client, second_engine):
        assert engine.api.containers(all=True, filters={"label": label}) == []


async def test_credentials_are_not_sent_to_hosts(cluster: RayCluster) -> None:
    """A call carrying egress credentials is refused here: secrets stay in the orchestrator."""
    profile = SandboxProfile(
        name="ray-credentials",
        pool_size=0,
        egress=EgressPolicy(allow=("api.example.com",)),
        loosen=frozenset({"egress"}),
    )
    credential = Credential(
        name="api",
        host="api.example.com",
        port=443,
        header="Authorization",
        template="Bearer {secret}",
        value="s3cret",
    )
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE])
    await backend.start()
    try:
        with pytest.raises(ConfigError, match="credentials"):
            await backend.execute(ExecRequest(argv=("true",), credentials=(credential,)), profile)
    finally:
        await backend.close()

"""Egress from sandboxes on Ray hosts: each host runs the proxy of its own containers.

The only origin is an HTTP server this test starts on the head's address inside
the cluster's network namespace (never the machine's own interface); the
profile allows exactly it. Both hosts reach it through their own proxy (the
second over the namespaces' veth pair); every other destination is refused by
the proxy before anything is resolved or connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest
from prometheus_client import generate_latest

from orchestrator.metrics import Metrics
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing import FETCH
from orchestrator.testing.egress import HttpRequest
from orchestrator.testing.ray_cluster import RayCluster
from orchestrator.testing.tls import TlsOrigin

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


CANARY = "sk-ray-canary-7e3a91c0d2b4"

# Through the proxy to the bound host: the runner's NO_PROXY keeps "localhost" off the
# proxy, which is right for anything else but not for this test's origin, which
# listens on each host's own loopback.
FETCH_BOUND = """
import os, sys, urllib.request
for name in ("NO_PROXY", "no_proxy"):
    os.environ.pop(name, None)
with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
    print(response.status, response.read().decode())
print("env", any("sk-ray" in value for value in os.environ.values()))
print("trust", os.environ.get("SSL_CERT_FILE"))
"""


def _echo(request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, f"seen: {request.headers.get('authorization', '')}".encode()


@pytest.fixture
def bound_origin(cluster: RayCluster) -> Iterator[tuple[TlsOrigin, int]]:
    """One HTTPS origin for ``localhost`` on both nodes' loopback, at the same port."""
    origin = TlsOrigin(["localhost"], _echo)
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(origin.serve())  # the head's namespace (this thread's)
        with cluster.enter(1):
            stack.enter_context(origin.serve(port))
        yield origin, port


async def test_credentials_reach_the_bound_host_through_each_hosts_proxy_never_the_sandbox(
    cluster: RayCluster, bound_origin: tuple[TlsOrigin, int], tmp_path: Path
) -> None:
    """A call bound to a credential sends it, sealed, to its host; the host's proxy adds it.

    The CA's key stays here (the hosts get its certificate at registration and a
    call's leaves with the call); the sandbox sees the proxy's leaf, trusted through
    the CA mounted beside its socket, and the bound host's answer with the secret
    redacted.
    """
    origin, port = bound_origin
    profile = SandboxProfile(
        name="ray-bound",
        pool_size=0,
        timeout_s=30,
        egress=EgressPolicy(
            allow=(f"localhost:{port}",),
            allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
        ),
        loosen=frozenset({"egress"}),
    )
    credential = Credential(
        name="canary",
        host="localhost",
        port=port,
        header="Authorization",
        template="Bearer {secret}",
        value=CANARY,
    )
    ca = DeploymentCA.open(tmp_path, ["localhost"])
    metrics = Metrics()
    backend = RayBackend(
        address=cluster.address,
        images=[DEFAULT_IMAGE],
        metrics=metrics,
        egress_ca=ca,
        credential_profiles=["ray-bound"],
        upstream_ca=origin.certificate_pem,
    )
    await backend.start()
    try:
        request = ExecRequest(
            argv=("python3", "-c", FETCH_BOUND, f"https://localhost:{port}/"),
            credentials=(credential,),
        )
        # Sent together, the calls are spread over both hosts (least in flight first).
        results = list(await asyncio.gather(*(backend.execute(request, profile) for _ in range(4))))
        assert {result.host for result in results} == {"host-a", "host-b"}

        # A host given credentials not sealed to it takes no container and runs nothing.
        host = backend.hosts["host-a"]
        served = json.loads(await host.actor.describe.remote(backend.instance_id))["served"]
        record, reply, _live = await host.actor.execute.remote(
            backend.instance_id,
            profile.model_dump_json(),
            b"",
            10.0,
            False,
            credentials=b"not sealed to this host",
        )
        refused = json.loads(record)
        assert refused["ended"] == "engine" and not refused["retryable"], refused
        assert "cannot add the call's credentials" in refused["message"], refused
        assert reply == b""
        assert json.loads(await host.actor.describe.remote(backend.instance_id))["served"] == served

        # A host that released this orchestrator (its lease ran out while it was cut
        # off) drops its CA too; the next refresh registers it again.
        await host.actor.release.remote(backend.instance_id)
        async with asyncio.timeout(20):
            while not json.loads(await host.actor.describe.remote(backend.instance_id))[
                "egress_registered"
            ]:
                await asyncio.sleep(0.2)
        again = await asyncio.gather(*(backend.execute(request, profile) for _ in range(2)))
        results += again
    finally:
        await backend.close()
    for result in results:
        assert result.status is ExecStatus.OK, result
        lines = result.stdout.splitlines()
        assert lines == [
            "200 seen: Bearer [REDACTED]",
            "env False",
            "trust /run/stockade/ca-bundle.pem",
        ], result.stdout + result.stderr
        assert CANARY not in result.stdout + result.stderr
        (event,) = result.egress
        assert (event.host, event.port, event.allowed, event.secret) == (
            "localhost",
            port,
            True,
            "canary",
        )
    # Counted here from the hosts' records, by the secret's name only.
    exposition = generate_latest(metrics.registry).decode()
    assert 'stockade_egress_credentials_total{profile="ray-bound",secret="canary"} 6.0' in (
        exposition
    )
    assert 'stockade_egress_connections_total{outcome="allowed",profile="ray-bound"} 6.0' in (
        exposition
    )
    assert CANARY not in exposition
    # The bound host got the secret on every request, through both hosts' proxies.
    assert [r.headers.get("authorization") for r in origin.requests] == [f"Bearer {CANARY}"] * 6

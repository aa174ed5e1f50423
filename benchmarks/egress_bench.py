"""http.fetch of a credential-bound HTTPS host: through the terminating proxy vs the tunnel.

Per call as a tool makes it: ``http.fetch`` through the gateway, one request per
single-use container (warm pool), the sandbox's own TLS handshake included —
with the proxy (terminated, the credential added, the response redacted) or with
the origin itself (tunnelled). The origin is an HTTPS server on 127.0.0.1 with
its own certificate; the proxy's resolver maps its name there. Both kinds of
call alternate, so drift hits them alike; the difference of the medians is
what termination adds. Upstream connections are pooled per (host, port,
secret): the origin's connection count shows how many handshakes the proxy made.

Then the proxy alone, from the host: a fresh client connection, CONNECT, TLS
handshake and one GET per request, terminating vs tunnelling, without a
container in the way.

Run: ``.venv/bin/python benchmarks/egress_bench.py [--calls 200] [--runtime runc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import json
import os
import platform
import socket
import ssl
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import docker
from _bench import stop_on_sigterm

from orchestrator.config import load_config
from orchestrator.platform import Platform, image_builder
from orchestrator.sandbox._egress_gate import CA_BUNDLE_NAME, SOCKET_NAME, EgressGates
from orchestrator.sandbox._egress_tls import Interception
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.testing import FixedResolver, LoopbackOnlyConnector
from orchestrator.testing.egress import HttpRequest
from orchestrator.testing.tls import TlsOrigin
from orchestrator.tools import ToolCall

HOST = "api.bench.test"
TOKEN = "bench-token-0123456789abcdef"


def app(request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
    authorised = request.headers.get("authorization") == f"Bearer {TOKEN}"
    return 200, {"Content-Type": "application/json"}, json.dumps({"ok": authorised}).encode()


def ms(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p95 * 1e3, statistics.fmean(ordered) * 1e3


async def through_tools(
    calls: int, runtime: str, origin: TlsOrigin, port: int, home: Path
) -> tuple[dict[str, list[float]], int]:
    """Gateway calls of http.fetch, alternating terminated and tunnelled; and upstream
    connections the proxy opened for the terminated ones."""
    policy = home / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - {name: fetch, tools: http.fetch, decision: allow}\n")
    config = home / "stockade.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            state_dir: {home / "state"}
            policy: {policy}
            toolkits: [toolkits.http]
            sandbox:
              runtime: {runtime}
              profiles:
                http:
                  pool_size: 2
                  loosen: [egress]
                  egress: {{allow: ['{HOST}:{port}'], allow_networks: [127.0.0.1/32]}}
            secrets:
              bench:
                env: STOCKADE_BENCH_TOKEN
                bind: [{{profile: http, host: {HOST}, port: {port}, principals: [terminated]}}]
            """
        )
    )
    os.environ["STOCKADE_BENCH_TOKEN"] = TOKEN
    loaded = load_config(config, environ={})
    client = docker.from_env()
    interception = Interception(
        # The sandbox's bundle trusts the origin too, so the tunnelled calls verify it.
        ca=DeploymentCA.open(home / "state", [HOST], anchors=origin.certificate_pem),
        profiles=frozenset({"http"}),
        upstream_tls=origin.client_context(),
    )
    backend = DockerBackend(
        client,
        images=image_builder(loaded.config, client),
        reap_on_start=False,
        egress_gates=EgressGates(
            resolver=FixedResolver({HOST: ["127.0.0.1"]}),
            connector=LoopbackOnlyConnector(),
            interception=interception,
        ),
    )
    samples: dict[str, list[float]] = {"terminated": [], "tunnel": []}
    connections_before = 0
    try:
        async with Platform.open(loaded, backend=backend, warm=True) as stockade:
            profile = stockade.profiles["http"]

            async def fetch(principal: str, number: int) -> float:
                # A warm container for every call, as when calls come at a tool's pace:
                # starting containers is the pool's work, measured elsewhere.
                await backend.wait_warm(profile)
                call = ToolCall(
                    id=f"{principal}-{number}",
                    name="http.fetch",
                    arguments={"url": f"https://{HOST}:{port}/item"},
                    principal=principal,
                )
                started = time.perf_counter()
                result = await stockade.gateway.call(call)
                elapsed = time.perf_counter() - started
                body = json.loads(json.loads(result.output or "{}").get("body") or "{}")
                assert body.get("ok") is (principal == "terminated"), (principal, result)
                return elapsed

            for number in range(20):  # warm-up: pools, caches, the upstream pool
                await fetch("terminated", number)
                await fetch("tunnel", number)
            connections_before = origin.connections
            tunnel_connections = 0
            for number in range(calls):
                samples["terminated"].append(await fetch("terminated", 100 + number))
                before = origin.connections
                samples["tunnel"].append(await fetch("tunnel", 100 + number))
                tunnel_connections += origin.connections - before
    finally:
        client.close()
    upstream = origin.connections - connections_before - tunnel_connections
    return samples, upstream


def host_request(gate_dir: Path, port: int, verify: ssl.SSLContext) -> float:
    """One fresh client connection: CONNECT, TLS handshake, GET; its duration."""
    started = time.perf_counter()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(gate_dir / SOCKET_NAME))
    raw.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(4096)
    tls = verify.wrap_socket(raw, server_hostname=HOST)
    connection = http.client.HTTPConnection(HOST, port)
    connection.sock = tls
    connection.request("GET", "/item", headers={"Host": f"{HOST}:{port}"})
    connection.getresponse().read()
    connection.close()
    return time.perf_counter() - started


async def proxy_alone(
    calls: int, origin: TlsOrigin, port: int, home: Path
) -> dict[str, list[float]]:
    ca = DeploymentCA.open(home / "alone", [HOST], anchors=origin.certificate_pem)
    gates = EgressGates(
        home,
        resolver=FixedResolver({HOST: ["127.0.0.1"]}),
        connector=LoopbackOnlyConnector(),
        interception=Interception(
            ca=ca, profiles=frozenset({"http"}), upstream_tls=origin.client_context()
        ),
    )
    policy = EgressPolicy(
        allow=(f"{HOST}:{port}",), allow_networks=(ipaddress.ip_network("127.0.0.1/32"),)
    )
    terminated, tunnel = (
        await gates.open(policy, profile="http"),
        await gates.open(policy, profile="http"),
    )
    terminated.arm(
        (Credential(name="bench", host=HOST, port=port, header="Authorization",
                    template="Bearer {secret}", value=TOKEN),)
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(terminated.directory / CA_BUNDLE_NAME))
    samples: dict[str, list[float]] = {"terminated": [], "tunnel": []}
    try:
        for round_ in range(calls + 20):
            for name, gate in (("terminated", terminated), ("tunnel", tunnel)):
                took = await asyncio.to_thread(host_request, gate.directory, port, context)
                if round_ >= 20:
                    samples[name].append(took)
    finally:
        await terminated.close()
        await tunnel.close()
        await gates.close()
    return samples


def report(title: str, samples: dict[str, list[float]], target_ms: float | None) -> None:
    print(f"\n## {title}")
    print("| path | p50 ms | p95 ms | mean ms |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        p50, p95, mean = ms(values)
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {mean:.2f} |")
    added = ms(samples["terminated"])[0] - ms(samples["tunnel"])[0]
    verdict = ""
    if target_ms is not None:
        verdict = f" — {'meets' if added <= target_ms else 'MISSES'} the {target_ms:g} ms target"
    print(f"\nadded by termination: p50 {added:.2f} ms{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="Calls of each kind.")
    parser.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    args = parser.parse_args()
    origin = TlsOrigin([HOST], app)
    with (
        tempfile.TemporaryDirectory(prefix="stockade-egress-bench-") as home,
        origin.serve() as port,
    ):
        tools, upstream = asyncio.run(
            through_tools(args.calls, args.runtime, origin, port, Path(home))
        )
        alone = asyncio.run(proxy_alone(args.calls, origin, port, Path(home)))
    print(f"# egress credentials, {args.calls} calls each, {args.runtime}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    report("http.fetch through the gateway, one request per container", tools, 10.0)
    print(
        f"upstream TLS connections the proxy opened for {args.calls} terminated calls: {upstream}"
    )
    report("the proxy alone, from the host: new connection + TLS + GET", alone, None)


if __name__ == "__main__":
    stop_on_sigterm()
    main()

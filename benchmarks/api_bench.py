"""HTTP API overhead per tool call, and API throughput on real sandboxes.

Part 1, the sandbox taken out (``ScriptedBackend`` answers at once): tool
calls ``POST /v1/tool-calls`` through a server in its own process (uvicorn,
the app ``stockade serve`` runs, on 127.0.0.1) from an ``httpx`` client,
side by side with direct ``Gateway.call`` on a platform with the same
configuration in this process; concurrency 1 and 32, interleaved rounds,
p50/p99 and calls/s. The difference of the medians at concurrency 1 is the
HTTP overhead (client, HTTP, authentication, validation, the server's
bookkeeping); ``GET /healthz`` shows one bare round trip for scale.

Part 2, real sandboxes (``--docker``): ``stockade serve`` itself (the CLI,
Docker backend, warm pools), ``python.run print(1)`` at concurrency 4 for
``--seconds``, against the sandbox layer's own rate: ``DockerBackend.execute``
of the very request the tool executor sends for that call, on a platform
with the same configuration in this process. Phases alternate, each starting
with full pools.

Run: ``.venv/bin/python benchmarks/api_bench.py [--calls 3000] [--docker | --docker-only]
[--seconds 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from _bench import stop_on_sigterm

from orchestrator.config import load_config
from orchestrator.errors import InfrastructureError
from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.server import Role, TokenStore, create_app, uvicorn_config
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

POLICY = "version: 1\ndefault: deny\nrules:\n  - {name: all, tools: '*', decision: allow}\n"
CODE = {"code": "print(1)"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_config(home: Path, *, extra: str = "") -> Path:
    (home / "policy.yaml").write_text(POLICY)
    config = home / "stockade.yaml"
    config.write_text(
        f"state_dir: {home}\npolicy: {home / 'policy.yaml'}\ntoolkits: [toolkits.python]\n" + extra
    )
    return config


def issue_token(config: Path) -> str:
    store = TokenStore(load_config(config, environ={}).config.tokens_db)
    try:
        return store.create(principal="bench", roles=[Role.CALLER]).token
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def quantiles_ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3

    return pick(0.5), pick(0.99)


@contextlib.contextmanager
def server_process(argv: list[str], port: int, log_file: Path) -> Any:
    """A server process, ready (``/readyz`` 200) when the block starts, stopped after."""
    with log_file.open("w") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            with httpx.Client(trust_env=False) as probe:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(log_file.read_text())
                    with contextlib.suppress(httpx.TransportError):
                        if probe.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("server not ready: " + log_file.read_text())
                    time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=60)


async def serve_scripted(config: Path, port: int) -> None:
    """The server of part 1: the API's app on the scripted backend (no access log)."""
    loaded = load_config(config, environ={})
    app = create_app(loaded, backend=ScriptedBackend())
    server = uvicorn.Server(
        uvicorn_config(app, host="127.0.0.1", port=port, shutdown_grace_s=1, access_log=False)
    )
    await server.serve()


@contextlib.asynccontextmanager
async def api_client(port: int, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
        timeout=120,
    ) as client:
        yield client


async def latencies(
    step: Callable[[int, int], Awaitable[None]], concurrency: int, calls_each: int
) -> tuple[list[float], float]:
    """Per-call latencies and calls/s of ``concurrency`` workers making calls back to back."""
    samples: list[float] = []

    async def worker(number: int) -> None:
        for call in range(calls_each):
            began = time.perf_counter()
            await step(number, call)
            samples.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return samples, len(samples) / (time.perf_counter() - began)


async def rate(
    step: Callable[[int, int], Awaitable[bool]], concurrency: int, seconds: float
) -> float:
    """Successful calls/s sustained by ``concurrency`` workers for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        nonlocal done
        call = 0
        while time.perf_counter() < stop:
            succeeded = await step(number, call)  # not `done += await …`: that reads
            done += succeeded  # `done` before the await and loses the others' updates
            call += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.perf_counter() - began)


async def part_one(home: Path, calls: int, rounds: int) -> None:
    http_home, direct_home = home / "http", home / "direct"
    http_home.mkdir()
    direct_home.mkdir()
    http_config, direct_config = write_config(http_home), write_config(direct_home)
    token = issue_token(http_config)
    port = free_port()
    argv = [sys.executable, __file__, "--serve-scripted", str(http_config), "--port", str(port)]
    results: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    with server_process(argv, port, home / "server.log"):
        async with (
            Platform.open(load_config(direct_config, environ={}), backend=ScriptedBackend()) as p,
            contextlib.AsyncExitStack() as stack,
        ):
            # One client (one keep-alive connection) per worker, as independent agents
            # would have: httpx's pool shared by 32 workers costs more than the server.
            clients = [await stack.enter_async_context(api_client(port, token)) for _ in range(32)]
            counter = iter(range(10**9))

            async def direct(worker: int, _call: int) -> None:
                result = await p.gateway.call(
                    ToolCall(id=f"d{next(counter)}", name="python.run", arguments=CODE,
                             run_id=f"run-{worker}", principal="bench")
                )  # fmt: skip
                assert result.status is ToolStatus.OK, result

            async def http(worker: int, _call: int) -> None:
                answer = await clients[worker].post(
                    "/v1/tool-calls",
                    json={"id": f"h{next(counter)}", "name": "python.run", "arguments": CODE,
                          "run_id": f"run-{worker}"},
                )  # fmt: skip
                assert answer.status_code == 200 and answer.json()["status"] == "ok", answer.text

            async def health(worker: int, _call: int) -> None:
                assert (await clients[worker].get("/healthz")).status_code == 200

            paths = {"direct Gateway.call": direct, "POST /v1/tool-calls": http,
                     "GET /healthz (one bare round trip)": health}  # fmt: skip
            for step in paths.values():  # warm-up: imports, caches, connections
                await latencies(step, 32, 20)
            for round_number in range(rounds):
                for concurrency in (1, 32):
                    for name, step in paths.items():
                        if concurrency == 32 and step is health:
                            continue
                        log(f"round {round_number + 1}/{rounds}: {name}, concurrency {concurrency}")
                        each = max(1, calls // rounds // concurrency)
                        samples, per_s = await latencies(step, concurrency, each)
                        lat, rates = results.setdefault((name, concurrency), ([], []))
                        lat.extend(samples)
                        rates.append(per_s)
    print("\n### Part 1: scripted sandbox\n")
    print("| path | concurrency | calls | p50 ms | p99 ms | calls/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, concurrency), (lat, rates) in results.items():
        p50, p99 = quantiles_ms(lat)
        mean_rate = sum(rates) / len(rates)
        print(f"| {name} | {concurrency} | {len(lat)} | {p50:.2f} | {p99:.2f} | {mean_rate:.0f} |")
    direct50 = quantiles_ms(results[("direct Gateway.call", 1)][0])[0]
    http50 = quantiles_ms(results[("POST /v1/tool-calls", 1)][0])[0]
    print(f"\nHTTP overhead at concurrency 1 (p50 difference): {http50 - direct50:.2f} ms")
    await server_own_time(home, calls)


async def server_own_time(home: Path, calls: int) -> None:
    """The application's own work per request: ASGI in this process, no socket, no client,
    the gateway answering at once (authentication, limits, routing, validation, the call's
    bookkeeping, the response)."""
    own_home = home / "own"
    own_home.mkdir()
    config = write_config(own_home)
    token = issue_token(config)
    app = create_app(load_config(config, environ={}), backend=ScriptedBackend())
    body = json.dumps({"id": "c", "name": "python.run", "arguments": CODE, "run_id": "r"}).encode()
    requests = {
        "GET /healthz": ("GET", "/healthz", b""),
        "GET /v1/tools/python.run (with authentication)": ("GET", "/v1/tools/python.run", b""),
        "POST /v1/tool-calls": ("POST", "/v1/tool-calls", body),
    }
    async with app.router.lifespan_context(app):
        gateway = app.state.stockade.platform.gateway

        async def at_once(call: ToolCall) -> ToolResult:
            return ToolResult(call_id=call.id, name=call.name, status=ToolStatus.OK, output="ok")

        gateway.call = at_once

        async def handle(method: str, path: str, data: bytes) -> None:
            headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode()),
                       (b"content-type", b"application/json"),
                       (b"content-length", str(len(data)).encode())]  # fmt: skip
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": method, "path": path, "raw_path": path.encode(),
                     "root_path": "", "scheme": "http", "query_string": b"",
                     "headers": headers, "client": ("127.0.0.1", 1),
                     "server": ("127.0.0.1", 80), "state": {}}  # fmt: skip
            messages = [{"type": "http.request", "body": data, "more_body": False}]
            sent: list[MutableMapping[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return messages.pop() if messages else {"type": "http.disconnect"}

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent

        print(
            "\nThe application's own work (in process, no socket; the gateway answers at once):\n"
        )
        print("| request | p50 µs | p99 µs |")
        print("|---|---:|---:|")
        for name, (method, path, data) in requests.items():
            for _ in range(200):
                await handle(method, path, data)
            samples = []
            for _ in range(calls):
                began = time.perf_counter()
                await handle(method, path, data)
                samples.append(time.perf_counter() - began)
            p50, p99 = quantiles_ms(samples)
            print(f"| {name} | {p50 * 1000:.0f} | {p99 * 1000:.0f} |")


class Recorder:
    """Keeps the requests a backend is asked to run (to replay them to the backend alone)."""

    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self.seen: list[tuple[ExecRequest, SandboxProfile]] = []
        self._execute = backend.execute

    async def __call__(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        self.seen.append((request, profile))
        return await self._execute(request, profile)


async def part_two(home: Path, seconds: float, rounds: int, concurrency: int) -> None:
    profiles = "sandbox:\n  profiles:\n    default: {pool_size: 2}\n"
    api_home, layer_home = home / "api", home / "layer"
    api_home.mkdir()
    layer_home.mkdir()
    api_config = write_config(api_home, extra=profiles)
    layer_config = write_config(layer_home, extra=profiles)
    token = issue_token(api_config)
    port = free_port()
    argv = [sys.executable, "-m", "orchestrator", "serve", "--config", str(api_config),
            "--port", str(port)]  # fmt: skip
    api_rates: list[float] = []
    layer_rates: list[float] = []
    outcomes: Counter[str] = Counter()
    env_home = os.environ.pop("STOCKADE_HOME", None)  # the files' state_dir, not a leftover
    try:
        with server_process(argv, port, home / "serve.log"):
            async with (
                Platform.open(load_config(layer_config, environ={}), warm=True) as platform,
                contextlib.AsyncExitStack() as stack,
            ):
                clients = [
                    await stack.enter_async_context(api_client(port, token))
                    for _ in range(concurrency)
                ]
                backend = platform.sandbox
                assert isinstance(backend, DockerBackend)
                # The requests the tool executor sends for python.run, one run per worker.
                recorder = Recorder(backend)
                backend.execute = recorder  # type: ignore[method-assign]
                for worker in range(concurrency):
                    result = await platform.gateway.call(
                        ToolCall(id=f"rec{worker}", name="python.run", arguments=CODE,
                                 run_id=f"run-{worker}", principal="bench")
                    )  # fmt: skip
                    assert result.status is ToolStatus.OK, result
                backend.execute = recorder._execute  # type: ignore[method-assign]
                requests = recorder.seen
                profile = requests[0][1]
                counter = iter(range(10**9))
                # Counted, not asserted: a rare failure under load is a result too.

                async def layer(worker: int, _call: int) -> bool:
                    request, used = requests[worker]
                    try:
                        result = await backend.execute(request, used)
                    except InfrastructureError as exc:  # the gateway would retry it
                        outcomes[f"sandbox layer: {exc.code.value}"] += 1
                        return False
                    outcomes[f"sandbox layer: {result.status.value}"] += 1
                    return result.status is ExecStatus.OK

                async def api(worker: int, _call: int) -> bool:
                    answer = await clients[worker].post(
                        "/v1/tool-calls",
                        json={"id": f"a{next(counter)}", "name": "python.run",
                              "arguments": CODE, "run_id": f"run-{worker}"},
                    )  # fmt: skip
                    status = answer.json()["status"]
                    outcomes[f"API: {status}"] += 1
                    return bool(status == "ok")

                async def settle() -> None:
                    await backend.wait_warm(profile)
                    await asyncio.sleep(3)  # the server's pool refills as well

                for round_number in range(rounds):
                    await settle()
                    log(f"round {round_number + 1}/{rounds}: sandbox layer, {seconds:g} s")
                    layer_rates.append(await rate(layer, concurrency, seconds))
                    await settle()
                    log(f"round {round_number + 1}/{rounds}: API, {seconds:g} s")
                    api_rates.append(await rate(api, concurrency, seconds))
    finally:
        if env_home is not None:
            os.environ["STOCKADE_HOME"] = env_home
    layer_mean = sum(layer_rates) / len(layer_rates)
    api_mean = sum(api_rates) / len(api_rates)
    print(f"\n### Part 2: real sandboxes, python.run print(1), concurrency {concurrency}\n")
    print("| path | rounds x s | ok calls/s (each round) | mean ok calls/s |")
    print("|---|---:|---|---:|")
    print(f"| sandbox layer: DockerBackend.execute | {rounds} x {seconds:g} | "
          f"{', '.join(f'{r:.2f}' for r in layer_rates)} | {layer_mean:.2f} |")  # fmt: skip
    print(f"| `stockade serve`: POST /v1/tool-calls | {rounds} x {seconds:g} | "
          f"{', '.join(f'{r:.2f}' for r in api_rates)} | {api_mean:.2f} |")  # fmt: skip
    print(f"\nAPI throughput / sandbox layer throughput: {api_mean / layer_mean:.0%}")
    print("outcomes: " + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="per path and concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docker", action="store_true", help="also part 2 (real sandboxes)")
    parser.add_argument("--docker-only", action="store_true", help="part 2 alone")
    parser.add_argument("--seconds", type=float, default=20.0, help="per part-2 phase")
    parser.add_argument("--concurrency", type=int, default=4, help="of part 2")
    parser.add_argument("--serve-scripted", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_scripted:
        await serve_scripted(args.serve_scripted, args.port)
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; load before: "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="stockade-api-bench-") as home:
        if not args.docker_only:
            await part_one(Path(home), args.calls, args.rounds)
        if args.docker or args.docker_only:
            await part_two(Path(home), args.seconds, args.rounds, args.concurrency)
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

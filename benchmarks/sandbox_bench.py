"""Sandbox layer benchmark: warm pool vs. `docker run --rm` vs. the engine's raw loop.

For one trivial tool call (``echo ok``) in the same image and the same hardened
container settings, measured side by side in one run:

  (a) ``docker run --rm`` (the CLI, one container per call);
  (b) the engine's raw create/start/wait/remove loop through the Docker SDK;
  (c) Stockade's warm pool, end to end through ``DockerBackend.execute``.

Reports latency p50/p95/p99 at concurrency 1 and sustained throughput at
concurrency 1, 2 and 4, the memory of an idle pooled container, and (with
``--images``) the time of ``stockade images build`` on an engine without the
Stockade images. Run: ``.venv/bin/python benchmarks/sandbox_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from _bench import percentiles, stop_on_sigterm

from orchestrator.config import load_config
from orchestrator.platform import Platform, image_builder
from orchestrator.sandbox._container import container_options
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile

ARGV = ("echo", "ok")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def docker_run_once(image: str, runtime: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            "10001:10001",
            "--init",
            "--runtime",
            runtime,
            image,
            *ARGV,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - began


def raw_loop_once(client: docker.DockerClient, profile: SandboxProfile, image: str) -> float:
    options = container_options(profile, image)
    options.update(command=list(ARGV), stdin_open=False)
    began = time.perf_counter()
    container = client.containers.create(**options)
    container.start()
    container.wait()
    container.remove(force=True)
    return time.perf_counter() - began


async def throughput(
    call: Callable[[], Awaitable[None]], concurrency: int, seconds: float
) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - began)


def idle_memory_mib(client: docker.DockerClient, backend_containers: list[str]) -> float:
    usages = []
    for container_id in backend_containers:
        stats = client.api.stats(container_id, stream=False)
        memory = stats.get("memory_stats", {})
        usage = memory.get("usage", 0) - memory.get("stats", {}).get("cache", 0)
        usages.append(usage / 2**20)
    return statistics.mean(usages) if usages else float("nan")


def images_build_seconds(client: docker.DockerClient) -> float:
    for image in client.images.list(filters={"label": "org.stockade.platform=stockade"}):
        assert image.id is not None  # a listed image has one
        client.images.remove(image.id, force=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", "images", "build"], check=True)
    return time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=("runc", "runsc"), default="runc")
    parser.add_argument("--seconds", type=float, default=15.0, help="per throughput point")
    parser.add_argument("--warm-calls", type=int, default=300)
    parser.add_argument("--cold-calls", type=int, default=20)
    parser.add_argument("--max-starting", type=int, default=2, help="pool refill concurrency")
    parser.add_argument(
        "--images", action="store_true", help="also time an images build from scratch"
    )
    args = parser.parse_args()

    client = docker.from_env()
    build_s = images_build_seconds(client) if args.images else None
    state = tempfile.TemporaryDirectory(prefix="stockade-bench-")
    config = Path(state.name) / "stockade.yaml"
    config.write_text(
        f"state_dir: {state.name}\nsandbox:\n  runtime: {args.runtime}\n"
        "  docker: {max_starting: " + str(args.max_starting) + "}\n"
        "  profiles:\n    bench: {image: stockade-sandbox, pool_size: 4}\n"
    )
    loaded = load_config(config)
    images = image_builder(loaded.config, client)
    images.build_all()
    image = images.resolve("stockade-sandbox")
    profile = loaded.config.sandbox.effective_profiles()["bench"]
    executor = ThreadPoolExecutor(max_workers=8)
    loop = asyncio.get_running_loop()

    log(f"(a) docker run --rm x{args.cold_calls}")
    run_lat = [docker_run_once(image, args.runtime) for _ in range(args.cold_calls)]
    log(f"(b) raw create/start/wait/remove x{args.cold_calls}")
    raw_lat = [raw_loop_once(client, profile, image) for _ in range(args.cold_calls)]

    results: dict[str, object] = {}
    async with Platform.open(loaded) as platform:
        backend = platform.sandbox
        assert isinstance(backend, DockerBackend)
        await backend.wait_warm(profile)
        log(f"(c) warm pool x{args.warm_calls}")
        warm_lat = []
        for _ in range(args.warm_calls):
            await backend.wait_warm(profile)  # latency of a call that finds the pool ready
            began = time.perf_counter()
            result = await backend.execute(ExecRequest(argv=ARGV), profile)
            warm_lat.append(time.perf_counter() - began)
            assert result.status is ExecStatus.OK and result.from_pool, result
        await backend.wait_warm(profile)
        pooled = [
            c["Id"] for c in client.api.containers(filters={"label": "org.stockade.profile=bench"})
        ]
        results["idle_mib"] = idle_memory_mib(client, pooled)

        async def stockade_call() -> None:
            result = await backend.execute(ExecRequest(argv=ARGV), profile)
            assert result.status is ExecStatus.OK, result

        async def raw_call() -> None:
            await loop.run_in_executor(executor, raw_loop_once, client, profile, image)

        rates: dict[int, tuple[float, float]] = {}
        for concurrency in (1, 2, 4):
            log(f"throughput at concurrency {concurrency}")
            raw_rate = await throughput(raw_call, concurrency, args.seconds)
            await backend.wait_warm(profile)
            pool_rate = await throughput(stockade_call, concurrency, args.seconds)
            rates[concurrency] = (raw_rate, pool_rate)
    executor.shutdown()
    state.cleanup()

    run50 = percentiles(run_lat)[0]
    warm50 = percentiles(warm_lat)[0]
    print(f"runtime: {args.runtime}; trivial call: {' '.join(ARGV)}\n")
    print("| path | calls | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|")
    rows = [
        ("(a) docker run --rm", run_lat),
        ("(b) engine create/start/wait/remove", raw_lat),
        ("(c) Stockade warm pool", warm_lat),
    ]
    for label, samples in rows:
        p50, p95, p99 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p95:.1f} | {p99:.1f} |")
    print(f"\nwarm pool p50 is {run50 / warm50:.0f}x faster than docker run --rm\n")
    print("| concurrency | (b) engine calls/s | (c) Stockade calls/s | (c)/(b) |")
    print("|---|---|---|---|")
    for concurrency, (raw_rate, pool_rate) in rates.items():
        print(f"| {concurrency} | {raw_rate:.2f} | {pool_rate:.2f} | {pool_rate / raw_rate:.0%} |")
    print(f"\nidle pooled container memory: {results['idle_mib']:.1f} MiB")
    if build_s is not None:
        print(f"stockade images build on an engine without Stockade images: {build_s:.1f} s")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

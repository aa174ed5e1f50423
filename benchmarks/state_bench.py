"""What keeping python.run's namespace across calls costs, against the same call stateless.

Rows, measured side by side in one run, every call the whole way an agent's
call goes (the gateway, a warm ``stockade-tools`` container whose tool host
forks the snippet, the workspace in and out):

- ``print(1)`` stateless (``stateless: true``, a run with an empty workspace):
  the baseline;
- the same stateless call in the run below: its 1 MB state file travels into
  the container but is not loaded (the transfer's share);
- ``print(1)`` in a run whose namespace holds a few functions, a class
  instance and 1 MB (serialised) of lists and dicts: the namespace is
  restored before the snippet and serialised after it; unchanged, so the file
  is not rewritten and does not travel back;
- the same with ``tick += 1``: the namespace changes, the file is rewritten
  and comes back to the host;
- both again with a 1 MiB numpy array added (numpy is preloaded by the host);
- the curve: 10 MB of lists and dicts, 10 MB and 100 MB (1 MB of lists and
  dicts, the rest a numpy array), changed by every call, under the profile
  ``state-big`` (memory 2 GiB, workspace 512 MiB, state cap 256 MiB: the
  default 512 MiB / 64 MiB / 32 MiB do not fit 100 MB);
- for comparison, ``docker exec`` of ``true`` into a long-lived container of
  the tools image: what each call would cost a design that keeps a kernel
  alive instead of starting from a fresh container.

Run: ``.venv/bin/python benchmarks/state_bench.py [--calls 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
from _bench import percentiles, stop_on_sigterm

from orchestrator.assets import shipped
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import TOOLS_IMAGE, ImageBuilder
from orchestrator.sandbox.labels import container_labels
from orchestrator.tools import ToolCall, ToolStatus
from stockade_sdk import _state

FUNCTIONS_AND_CLASS = """
def scale(values, factor):
    return [v * factor for v in values]
def summary(rows):
    return {"count": len(rows), "total": sum(r["score"] for r in rows)}
def label(row):
    return f"{row['name']}: {row['score']:.1f}"
class Portfolio:
    def __init__(self, owner, positions):
        self.owner, self.positions = owner, positions
    def value(self):
        return sum(self.positions.values())
portfolio = Portfolio("ada", {"acme": 10.0, "globex": 25.5})
tick = 0
"""
# 30 000 rows of three fields serialise to about 1 MB.
ROWS = 'rows = [{{"id": i, "name": f"row{{i}}", "score": i * 0.5}} for i in range({count})]\n'
ARRAY = "import numpy as np\narray = np.random.default_rng(0).random({count})\n"
MiB = 1 << 20


async def timed(
    times: int, before: Callable[[], Awaitable[None]], call: Callable[[], Awaitable[Any]]
) -> list[float]:
    samples = []
    for _ in range(times):
        await before()
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def docker_exec(client: docker.DockerClient, calls: int, image: str) -> list[float]:
    """``docker exec`` of ``true`` into one long-lived container, as the SDK does it."""
    container = client.containers.run(
        image, ["sleep", "infinity"], detach=True, network_mode="none", read_only=True,
        labels=container_labels("bench-exec", lifetime_s=600),
    )  # fmt: skip
    try:
        container.exec_run(["true"])  # the first exec warms the engine's paths
        samples = []
        for _ in range(calls):
            began = time.perf_counter()
            exit_code, _ = container.exec_run(["true"])
            samples.append(time.perf_counter() - began)
            assert exit_code == 0
        return samples
    finally:
        container.remove(force=True)


BIG_PROFILE = (
    "{pool_size: 1, memory_mb: 2048, workspace_mb: 512, python_state_mb: 256,"
    " timeout_s: 60, loosen: [memory, workspace, timeout]}"
)


class Bench:
    """Calls python.run through one platform's gateway, each with a warm container ready."""

    def __init__(self, platform: Platform) -> None:
        backend = platform.sandbox
        assert isinstance(backend, DockerBackend)
        self.platform, self.backend = platform, backend
        self.number = 0

    async def warm(self) -> None:
        await self.backend.wait_warm(self.platform.profiles["default"])

    async def run(self, run_id: str, code: str, **extra: Any) -> dict[str, Any]:
        self.number += 1
        arguments = {"code": code, "timeout_s": 60, **extra}
        call = ToolCall(id=f"b{self.number}", name="python.run", arguments=arguments, run_id=run_id)
        result = await self.platform.gateway.call(call)
        assert result.status is ToolStatus.OK, result
        output: dict[str, Any] = json.loads(result.output)
        assert output["exit_code"] == 0 and "state" not in output, output
        return output

    async def setup(self, run_id: str, code: str) -> float:
        """Define a namespace in ``run_id``; its serialised size in MB."""
        await self.run(run_id, FUNCTIONS_AND_CLASS + code)
        path = self.platform.config.workspaces_root / run_id / _state.STATE_PATH
        return path.stat().st_size / 1e6

    async def interleaved(
        self, calls: int, kinds: list[tuple[str, str, dict[str, Any]]]
    ) -> list[list[float]]:
        """``calls`` rounds of one call of each kind (run id, code, arguments), in turn."""
        samples: list[list[float]] = [[] for _ in kinds]
        for _ in range(calls):
            for index, (run_id, code, extra) in enumerate(kinds):
                await self.warm()
                began = time.perf_counter()
                await self.run(run_id, code, **extra)
                samples[index].append(time.perf_counter() - began)
        return samples


def table(title: str, rows: list[tuple[str, list[float]]]) -> None:
    """Print rows, the first being the baseline the others are compared with."""
    base = percentiles(rows[0][1])[0]
    print(f"\n| {title} | calls | p50 ms | p95 ms | p99 ms | p50 over the first row |")
    print("|---|---|---|---|---|---|")
    for label, samples in rows:
        p50, p95, p99 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
              f"{p50 - base:+.1f} |", flush=True)  # fmt: skip


def open_platform(home: str, profile: str) -> contextlib.AbstractAsyncContextManager[Platform]:
    config = Path(home) / "stockade.yaml"
    config.write_text(
        f"state_dir: {home}\npolicy: {shipped('policies') / 'dev.yaml'}\n"
        f"toolkits: [toolkits.python]\nsandbox:\n  profiles:\n    default: {profile}\n"
    )
    return Platform.open(load_config(config), warm=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--big-calls", type=int, default=10)
    args = parser.parse_args()
    client = docker.from_env()
    builder = ImageBuilder(client)
    one_mb = ROWS.format(count=30_000)
    plain = ("plain", "print(1)", {"stateless": True})
    print(f"load average at the start {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stockade-bench-") as home:
        await asyncio.to_thread(builder.build_all)
        async with open_platform(home, "{pool_size: 2}") as platform:
            bench = Bench(platform)
            small = await bench.setup("small", one_mb)
            numpy = await bench.setup("numpy", one_mb + ARRAY.format(count=MiB // 8))
            print(f"default profile x{args.calls}", file=sys.stderr)
            kinds = [
                plain, ("small", "print(1)", {"stateless": True}),
                ("small", "print(1)", {}), ("small", "tick += 1\nprint(1)", {}),
                ("numpy", "print(1)", {}), ("numpy", "tick += 1\nprint(1)", {}),
            ]  # fmt: skip
            samples = await bench.interleaved(args.calls, kinds)
    names = [
        "`print(1)` stateless",
        "`print(1)` stateless, the 1 MB state file in the workspace (it travels in)",
        f"`print(1)`, functions + instance + lists and dicts ({small:.1f} MB), unchanged",
        "`tick += 1; print(1)`, the same, rewritten and back to the host",
        f"`print(1)`, the same + 1 MiB numpy array ({numpy:.1f} MB), unchanged",
        "`tick += 1; print(1)`, the same + numpy, rewritten and back to the host",
    ]
    table("call through the gateway, default profile", list(zip(names, samples, strict=True)))

    curve = [
        ("lists and dicts", ROWS.format(count=300_000)),
        ("1 MB lists and dicts + numpy", one_mb + ARRAY.format(count=9 * MiB // 8)),
        ("1 MB lists and dicts + numpy", one_mb + ARRAY.format(count=99 * MiB // 8)),
    ]
    if args.big_calls > 0:  # --big-calls 0 skips the curve (it takes minutes)
        with tempfile.TemporaryDirectory(prefix="stockade-bench-") as home:
            await asyncio.to_thread(builder.build_all)
            async with open_platform(home, BIG_PROFILE) as platform:
                bench = Bench(platform)
                sizes = [await bench.setup(f"big{i}", setup) for i, (_, setup) in enumerate(curve)]
                print(f"state-big profile x{args.big_calls}", file=sys.stderr)
                kinds = [plain] + [
                    (f"big{i}", "tick += 1\nprint(1)", {}) for i in range(len(curve))
                ]
                samples = await bench.interleaved(args.big_calls, kinds)
        names = ["`print(1)` stateless"] + [
            f"`tick += 1; print(1)`, {label} ({size:.0f} MB), rewritten and back"
            for (label, _), size in zip(curve, sizes, strict=True)
        ]
        table("state-big profile", list(zip(names, samples, strict=True)))

    print(f"docker exec x{args.calls}", file=sys.stderr)
    image = builder.resolve(TOOLS_IMAGE)
    exec_samples = await asyncio.to_thread(docker_exec, client, args.calls, image)
    client.close()
    table("long-lived container", [("`docker exec` of `true`", exec_samples)])
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

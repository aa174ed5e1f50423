"""Tool-call latency through the warm pool: ``python.run`` and ``files.read``.

Each call goes the whole way an agent's call goes after policy: host-side
validation, a warm container from the pool, ``python3 -m stockade_sdk.run``
inside it, the workspace in and out, the result parsed into a ToolResult.
Beside them, the trivial sandbox call (``echo ok``) of sandbox_bench.py.
Run: ``.venv/bin/python benchmarks/tools_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import docker

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import (
    DEFAULT_TOOL_PROFILE,
    ToolCall,
    ToolExecutor,
    ToolRegistry,
    ToolStatus,
)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    client = docker.from_env()
    images = ImageBuilder(client)
    images.build_all()
    registry = ToolRegistry()
    for toolkit in ("toolkits.files", "toolkits.python"):
        registry.load(toolkit)
    profile = DEFAULT_TOOL_PROFILE.model_copy(update={"pool_size": 2})
    trivial = SandboxProfile(name="trivial", pool_size=2)
    with tempfile.TemporaryDirectory(prefix="stockade-bench-") as home:
        workspaces = WorkspaceManager(Path(home))
        (workspaces.open("bench").path / "notes.txt").write_text("hello\n" * 100)
        async with DockerBackend(client, images=images, profiles=[profile, trivial]) as backend:
            executor = ToolExecutor(registry, backend, profiles=[profile], workspaces=workspaces)
            calls = {
                "python.run `print(1)`": ToolCall(
                    id="b", name="python.run", arguments={"code": "print(1)"}
                ),
                "files.read (workspace of 1 file)": ToolCall(
                    id="b", name="files.read", arguments={"path": "notes.txt"}, run_id="bench"
                ),
            }
            rows: list[tuple[str, list[float]]] = []
            samples: list[float] = []
            for _ in range(args.calls):
                await backend.wait_warm(trivial)
                began = time.perf_counter()
                result = await backend.execute(ExecRequest(argv=("echo", "ok")), trivial)
                samples.append(time.perf_counter() - began)
                assert result.status is ExecStatus.OK
            rows.append(("trivial sandbox call `echo ok`", samples))
            for label, call in calls.items():
                print(f"{label} x{args.calls}", file=sys.stderr)
                samples = []
                for _ in range(args.calls):
                    await backend.wait_warm(profile)
                    began = time.perf_counter()
                    outcome = await executor.execute(call)
                    samples.append(time.perf_counter() - began)
                    assert outcome.status is ToolStatus.OK, outcome
                rows.append((label, samples))
            assert json.loads(outcome.output)["content"].startswith("hello")
    print("| call | calls | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())

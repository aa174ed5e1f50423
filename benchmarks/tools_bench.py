"""Tool-call latency through the warm pool: ``python.run`` and ``files.read``.

Each call goes the whole way an agent's call goes, through the platform's
gateway (shipped dev policy, durable audit): host-side validation, the policy,
a warm container from the pool, ``python3 -m stockade_sdk.run``
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

from orchestrator.assets import shipped
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.tools import ToolCall, ToolStatus


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stockade-bench-") as home:
        config = Path(home) / "stockade.yaml"
        config.write_text(
            f"state_dir: {home}\npolicy: {shipped('policies') / 'dev.yaml'}\n"
            "toolkits: [toolkits.files, toolkits.python]\n"
            "sandbox:\n  runtime: " + args.runtime + "\n"
            "  profiles:\n    default: {pool_size: 2}\n"
            "    trivial: {image: stockade-sandbox, pool_size: 2}\n"
        )
        async with Platform.open(load_config(config), warm=True) as platform:
            backend = platform.sandbox
            assert isinstance(backend, DockerBackend)
            profile, trivial = platform.profiles["default"], platform.profiles["trivial"]
            (platform.workspaces.open("bench").path / "notes.txt").write_text("hello\n" * 100)
            calls = {
                "python.run `print(1)`": {"name": "python.run", "arguments": {"code": "print(1)"}},
                "files.read (workspace of 1 file)": {
                    "name": "files.read", "arguments": {"path": "notes.txt"}, "run_id": "bench",
                },
            }  # fmt: skip
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
                for number in range(args.calls):
                    await backend.wait_warm(profile)
                    began = time.perf_counter()
                    outcome = await platform.gateway.call(ToolCall(id=f"b{number}", **call))
                    samples.append(time.perf_counter() - began)
                    assert outcome.status is ToolStatus.OK, outcome
                rows.append((label, samples))
            assert json.loads(outcome.output)["content"].startswith("hello")
    print(f"runtime: {args.runtime}; tool calls through the gateway (dev policy, no limits)\n")
    print("| call | calls | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())

"""Tool-call latency through the warm pool, and a large workspace in and out.

Rows, measured side by side in one run:

- the trivial sandbox call ``echo ok`` (sandbox_bench.py's path (c));
- ``python.run`` ``print(1)`` at the sandbox layer, served by the warm tool
  host and, for comparison, as it ran before it (``python3 -S -m
  stockade_sdk.run`` started for the call, which starts the snippet's own
  ``python3``);
- ``python.run`` ``print(1)`` and ``files.read`` of a one-file workspace, each
  the whole way an agent's call goes, through the platform's gateway (shipped
  dev policy, durable audit): validation, the policy, a warm ``stockade-tools``
  container whose tool host (started, SDK and toolkits imported, before the
  call) serves it (``python.run`` forks the snippet from the host), the
  workspace in and out, the result parsed into a ToolResult;
- a workspace of 1 000 files / 100 MB: ``cp -a`` of the tree on the same disk
  (the baseline), and backend calls with it: one that leaves it untouched (in,
  and only the runner's listing back), one that appends a byte to one file (in,
  that file back and written in place), one that appends a byte to every file
  (in, 100 MB back, each file staged, then renamed into place); the same
  ``true`` without a workspace beside them.

Each call finds its pool ready (calls in an agent's run are seconds apart).
Run: ``.venv/bin/python benchmarks/tools_bench.py [--runtime runsc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _bench import percentiles, stop_on_sigterm

from orchestrator.assets import shipped
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import Workspace
from orchestrator.tools import ToolCall, ToolStatus
from stockade_sdk.run import ENTRY_ARGV

FILES, FILE_BYTES = 1000, 100_000
REWRITE = 'for f in d*/*; do printf x >> "$f"; done'
REWRITE_ONE = "printf x >> d0/f0000.bin"


async def timed(
    times: int, before: Callable[[], Awaitable[None]], call: Callable[[], Awaitable[None]]
) -> list[float]:
    samples = []
    for _ in range(times):
        await before()
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def fill(workspace: Workspace) -> None:
    """1 000 files of 100 kB (random: nothing compresses) in 10 directories."""
    for index in range(FILES):
        directory = workspace.path / f"d{index % 10}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{index:04}.bin").write_bytes(os.urandom(FILE_BYTES))


def copy_tree(source: Path, times: int) -> list[float]:
    """``cp -a`` of the tree beside it (same disk, warm page cache like the calls)."""
    samples = []
    for _ in range(times):
        target = source.with_name(source.name + ".copy")
        began = time.perf_counter()
        subprocess.run(["cp", "-a", str(source), str(target)], check=True)
        samples.append(time.perf_counter() - began)
        shutil.rmtree(target)
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workspace-calls", type=int, default=10)
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
            # 100 MB in the workspace's tmpfs, which counts as the container's memory.
            "    big: {image: stockade-sandbox, pool_size: 1, workspace_mb: 160,"
            " memory_mb: 1024, loosen: [workspace, memory]}\n"
        )
        async with Platform.open(load_config(config), warm=True) as platform:
            backend = platform.sandbox
            assert isinstance(backend, DockerBackend)
            profiles = platform.profiles
            (platform.workspaces.open("bench").path / "notes.txt").write_text("hello\n" * 100)

            def warm(profile: SandboxProfile) -> Callable[[], Awaitable[None]]:
                return lambda: backend.wait_warm(profile)

            async def execute(profile: SandboxProfile, request: ExecRequest) -> None:
                result = await backend.execute(request, profile)
                assert result.status is ExecStatus.OK, result

            async def tool(number: list[int], **call: object) -> None:
                number[0] += 1
                outcome = await platform.gateway.call(ToolCall(id=f"b{number[0]}", **call))  # type: ignore[arg-type]
                assert outcome.status is ToolStatus.OK, outcome

            counter = [0]
            calls, n = args.calls, args.workspace_calls
            default, trivial, big = profiles["default"], profiles["trivial"], profiles["big"]
            echo = ExecRequest(argv=("echo", "ok"))
            # The same tool call at the sandbox layer: served by the warm host,
            # and (another spelling of the command, so not a tool request) the
            # way it ran before: an interpreter for the tool, another for the snippet.
            tool_env = {"PYTHONPATH": "/opt/stockade/lib"}
            warm_run = ExecRequest(
                argv=(*ENTRY_ARGV, "toolkits.python:run"), stdin=b'{"code": "print(1)"}',
                env=tool_env,
            )  # fmt: skip
            cold_run = ExecRequest(
                argv=("/usr/bin/python3", *ENTRY_ARGV[1:], "toolkits.python:run"),
                stdin=b'{"code": "print(1)"}', env=tool_env,
            )  # fmt: skip
            print_one = {"name": "python.run", "arguments": {"code": "print(1)"}}
            read_one = {"name": "files.read", "arguments": {"path": "notes.txt"}, "run_id": "bench"}
            print(f"tool calls x{calls}", file=sys.stderr)
            rows = [
                ("trivial sandbox call `echo ok`",
                 await timed(calls, warm(trivial), lambda: execute(trivial, echo))),
                ("python.run `print(1)`",
                 await timed(calls, warm(default), lambda: tool(counter, **print_one))),
                ("files.read (workspace of 1 file)",
                 await timed(calls, warm(default), lambda: tool(counter, **read_one))),
                ("sandbox layer: python.run `print(1)`, warm tool host",
                 await timed(calls, warm(default), lambda: execute(default, warm_run))),
                ("sandbox layer: python.run `print(1)`, cold (two interpreter starts)",
                 await timed(calls, warm(default), lambda: execute(default, cold_run))),
            ]  # fmt: skip
            read = await platform.gateway.call(ToolCall(id="check", **read_one))  # type: ignore[arg-type]
            assert json.loads(read.output)["content"].startswith("hello")

            print(f"workspace of {FILES} files x{n}", file=sys.stderr)
            workspace = platform.workspaces.open("big")
            await asyncio.to_thread(fill, workspace)
            size = sum(f.stat().st_size for f in workspace.path.rglob("*") if f.is_file())
            copies = await asyncio.to_thread(copy_tree, workspace.path, n)
            untouched = ExecRequest(argv=("true",), workspace=workspace)
            rewrite = ExecRequest(argv=("sh", "-c", REWRITE), workspace=workspace)
            rewrite_one = ExecRequest(argv=("sh", "-c", REWRITE_ONE), workspace=workspace)
            bare = ExecRequest(argv=("true",))
            workspace_rows = [
                (f"`cp -a` of the tree ({FILES} files, {size / 1e6:.0f} MB)", copies),
                ("call `true`: workspace in, untouched",
                 await timed(n, warm(big), lambda: execute(big, untouched))),
                ("call appending a byte to one file: in, that file back",
                 await timed(n, warm(big), lambda: execute(big, rewrite_one))),
                ("call appending a byte to every file: in, all back",
                 await timed(n, warm(big), lambda: execute(big, rewrite))),
                ("call `true` without a workspace",
                 await timed(n, warm(big), lambda: execute(big, bare))),
            ]  # fmt: skip
    load = os.getloadavg()
    print(f"runtime: {args.runtime}; load average before/after: see `uptime`; now {load[0]:.2f}")
    print("\n| call | calls | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for label, samples in rows:
        p50, p95, p99 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p95:.1f} | {p99:.1f} |")
    print("\n| workspace | runs | p50 ms | p95 ms | p50 / `cp -a` p50 |")
    print("|---|---|---|---|---|")
    baseline = percentiles(copies)[0]
    for label, samples in workspace_rows:
        p50, p95, _ = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.0f} | {p95:.0f} | {p50 / baseline:.2f}x |")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

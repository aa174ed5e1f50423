"""The audit log as the gateway uses it: bounded records, and no waiting on the event loop.

Both were findings: three ``files.write`` calls of 5 MB each added 15 MB to
the log, and the append (``flock`` + ``fsync``) ran on the event loop, so a
log held by another process stalled every call and run of the orchestrator.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.audit import AuditLog, verify
from orchestrator.config import builtin_profiles
from orchestrator.gateway import Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import parse_policy
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.testing.backend import ScriptedBackend, tool_output
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolStatus

POLICY = """
version: 1
default: deny
rules:
  - {name: files, tools: 'files.*', decision: allow}
  - {name: python, tools: python.run, decision: allow}
"""


def gateway(
    root: Path,
    script: list[Any] | None = None,
    *,
    backend: ScriptedBackend | None = None,
    **audit: Any,
) -> Gateway:
    registry = ToolRegistry()
    registry.load("toolkits.files")
    registry.load("toolkits.python")
    backend = backend or ScriptedBackend(script or [])
    executor = ToolExecutor(registry, backend, profiles=builtin_profiles("runc").values())
    log = AuditLog(root / "audit.jsonl", **audit)
    return Gateway(executor, parse_policy(POLICY), log, metrics=Metrics())


def records(path: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "call"]


async def test_large_arguments_are_recorded_as_digest_size_and_head(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    log = tmp_path / "audit.jsonl"
    before = log.stat().st_size
    contents = [chr(ord("a") + n) * (5 * 1024 * 1024) for n in range(3)]
    for n, content in enumerate(contents):
        call = ToolCall(
            id=f"w{n}", name="files.write", arguments={"path": f"big{n}.txt", "content": content}
        )
        assert (await gw.call(call)).status is ToolStatus.OK
    grown = log.stat().st_size - before
    # Two records per call, each with the bounded arguments: the intent and the outcome.
    assert grown < 3 * 2 * 6 * 1024, f"three 5 MB writes grew the log by {grown} bytes"
    for record, content in zip(records(log), contents, strict=True):
        assert record["arguments"]["path"].startswith("big"), "small values stay readable"
        assert record["arguments"]["content"] == {
            "sha256": hashlib.sha256(content.encode()).hexdigest(),
            "bytes": 5 * 1024 * 1024,
            "head": content[:4096],
        }
        assert record["bounded"] == ["/arguments/content"]
    assert verify(log).ok


async def test_the_cap_is_the_logs_to_choose(tmp_path: Path) -> None:
    gw = gateway(tmp_path, max_value_bytes=100)
    call = ToolCall(id="c", name="python.run", arguments={"code": "print(1)\n" * 20})
    assert (await gw.call(call)).status is ToolStatus.OK
    (record,) = records(tmp_path / "audit.jsonl")
    assert record["arguments"]["code"]["bytes"] == 180
    assert len(record["arguments"]["code"]["head"]) == 100


async def test_a_large_output_is_bounded_too(tmp_path: Path) -> None:
    output = json.dumps({"stdout": "x" * 10_000, "stderr": "", "exit_code": 0})
    gw = gateway(tmp_path, script=[tool_output(output)])
    result = await gw.call(ToolCall(id="c", name="python.run", arguments={"code": "..."}))
    assert result.status is ToolStatus.OK
    (record,) = records(tmp_path / "audit.jsonl")
    assert record["output"]["sha256"] == hashlib.sha256(result.output.encode()).hexdigest()
    assert record["output_bytes"] == record["output"]["bytes"] == len(result.output)
    assert record["bounded"] == ["/output"]


async def test_a_locked_log_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    log = tmp_path / "audit.jsonl"
    holder = os.open(log, os.O_RDWR)  # as another process's writer would, mid-append
    fcntl.flock(holder, fcntl.LOCK_EX)
    # Should the loop block anyway (the bug), this lets it go on after 2 s,
    # so the test fails on the stall instead of hanging.
    rescue = threading.Timer(2.0, fcntl.flock, (holder, fcntl.LOCK_UN))
    rescue.start()
    try:
        task = asyncio.create_task(
            gw.call(ToolCall(id="c", name="python.run", arguments={"code": "1"}))
        )
        gaps, last = [], time.monotonic()
        for _ in range(20):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"
        assert not task.done(), "the result waits until its record is durable"
        fcntl.flock(holder, fcntl.LOCK_UN)
        result = await asyncio.wait_for(task, 10)
    finally:
        rescue.cancel()
        os.close(holder)
    assert result.status is ToolStatus.OK
    assert [r["call_id"] for r in records(log)] == ["c"]


class _HeldBackend(ScriptedBackend):
    """Answers no call until ``go`` is set, so the test decides when outcomes come."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        result = await super().execute(request, profile)
        await self.go.wait()
        return result


async def _held_back(log: Path, waiting: list[asyncio.Task[Any]]) -> None:
    """Hold the log's lock (as another process would) while records pile up behind it."""
    holder = os.open(log, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    rescue = threading.Timer(2.0, fcntl.flock, (holder, fcntl.LOCK_UN))  # as above
    rescue.start()
    try:
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in waiting)
    finally:
        rescue.cancel()
        os.close(holder)  # releases the lock


async def test_concurrent_calls_share_fsyncs(tmp_path: Path, monkeypatch: Any) -> None:
    backend = _HeldBackend()
    gw = gateway(tmp_path, backend=backend)
    log = tmp_path / "audit.jsonl"
    fsyncs: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    calls = [
        asyncio.create_task(
            gw.call(ToolCall(id=f"c{n}", name="python.run", arguments={"code": str(n)}))
        )
        for n in range(32)
    ]
    # The 32 intents pile up behind the lock and are written in at most two
    # batches: the one the writer took before it met the lock, and the rest.
    await _held_back(log, calls)
    while len(backend.requests) < 32:
        await asyncio.sleep(0.01)
    intents = len(fsyncs)
    # The same for the 32 outcomes, all released at once behind the lock.
    backend.go.set()
    await _held_back(log, calls)
    results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert all(result.status is ToolStatus.OK for result in results)
    assert len(records(log)) == 32 and verify(log).ok
    # A handful of fsyncs for 64 records, not 64, however the machine schedules the threads.
    assert intents <= 2, f"{intents} fsyncs for 32 concurrent intents"
    assert len(fsyncs) - intents <= 2, f"{len(fsyncs) - intents} fsyncs for 32 outcomes"

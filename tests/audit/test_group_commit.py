"""Group commit: concurrent writers share an fsync, each answered only once durable."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.audit import AuditEvent, AuditLog, AuditRecord, _appender, verify
from orchestrator.audit._group import GroupCommit
from orchestrator.errors import ErrorCode, InfrastructureError


def record(index: int) -> AuditRecord:
    return AuditRecord(event=AuditEvent.CALL, call_id=f"c{index}", tool="python.run", status="ok")


async def test_concurrent_writes_are_chained_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    written = await asyncio.gather(*(log.write(record(i)) for i in range(50)))
    assert [w["call_id"] for w in written] == [f"c{i}" for i in range(50)]
    assert [w["seq"] for w in written] == list(range(50))
    assert verify(path).ok and verify(path).records == 50


async def test_a_writer_is_answered_only_after_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    durable = {"bytes": 0}
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.01)
        real(fd)
        durable["bytes"] = max(durable["bytes"], os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", slow_fsync)

    async def write(index: int) -> None:
        written = await log.write(record(index))
        lines = path.read_bytes().splitlines(keepends=True)
        end = sum(len(line) for line in lines[: written["seq"] + 1])
        assert end <= durable["bytes"], "answered before its record was fsynced"

    await asyncio.gather(*(write(i) for i in range(40)))


async def test_a_cancelled_writer_still_gets_its_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    task = asyncio.create_task(log.write(record(1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await log.write(record(2))  # written after it, so it is written now
    assert [r["call_id"] for r in map(json.loads, path.read_text().splitlines())] == ["c1", "c2"]


async def test_a_batch_that_cannot_be_written_is_not_written_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    await log.write(record(0))
    size = path.stat().st_size
    real = _appender._write_all

    def disk_full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])  # part of the batch reached the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_appender, "_write_all", disk_full)
    outcomes = await asyncio.gather(
        *(log.write(record(i)) for i in range(1, 6)), return_exceptions=True
    )
    assert all(isinstance(o, InfrastructureError) for o in outcomes), outcomes
    error = outcomes[0]
    assert isinstance(error, InfrastructureError)
    assert error.code is ErrorCode.AUDIT and "No space left" in str(error)
    assert path.stat().st_size == size, "the half-written batch was cut off"
    monkeypatch.setattr(_appender, "_write_all", real)
    assert (await log.write(record(6)))["seq"] == 1
    assert verify(path).ok and verify(path).records == 2


async def test_an_invalid_record_is_refused_at_once(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="statuss"):
        await log.write({"event": "call", "statuss": "ok"})


async def test_close_drains_then_refuses(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    pending = [asyncio.create_task(log.write(record(i))) for i in range(10)]
    await asyncio.sleep(0)
    await log.aclose()
    assert len(path.read_text().splitlines()) == 10
    assert len(await asyncio.gather(*pending)) == 10
    with pytest.raises(InfrastructureError, match="closed"):
        await log.write(record(11))
    with pytest.raises(InfrastructureError, match="closed"):
        log.append(record(11))


async def test_without_group_commit_write_appends_in_place(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, group_commit=False)
    names = set()

    real = log._appender.commit

    def commit(bodies: Any) -> Any:
        names.add(threading.current_thread().name)
        return real(bodies)

    log._appender.commit = commit  # type: ignore[method-assign]
    await asyncio.gather(*(log.write(record(i)) for i in range(3)))
    assert names == {threading.current_thread().name}
    assert verify(path).records == 3


async def test_the_writer_thread_ends_when_idle() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: items, name="t", idle_s=0.01)
    assert await group.submit(7) == 7
    deadline = time.monotonic() + 5
    while group._thread is not None:
        assert time.monotonic() < deadline, "the idle writer thread never ended"
        await asyncio.sleep(0.005)
    assert await group.submit(8) == 8, "a new thread starts for the next item"


async def test_small_records_are_prepared_on_the_loop_large_ones_on_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redacting a model's multi-megabyte argument must never hold up the event loop."""
    log = AuditLog(tmp_path / "audit.jsonl", redact_patterns=[r"sk-[a-z]{8}"])
    where: dict[str, str] = {}
    real = log._prepare

    def prepare(model: AuditRecord) -> dict[str, Any]:
        where[model.call_id or ""] = threading.current_thread().name
        return real(model)

    monkeypatch.setattr(log, "_prepare", prepare)
    small = AuditRecord(event=AuditEvent.INTENT, call_id="small", arguments={"code": "sk-abcdefgh"})
    many = AuditRecord(event=AuditEvent.INTENT, call_id="many", arguments={"n": list(range(20000))})
    large = AuditRecord(
        event=AuditEvent.CALL, call_id="large", output="sk-abcdefgh " + "x" * 3_000_000
    )
    written = [await log.write(item) for item in (small, many, large)]
    loop_thread = threading.current_thread().name
    assert where["small"] == loop_thread
    assert where["many"] != loop_thread and where["large"] != loop_thread
    # Wherever it was prepared, a record is redacted and bounded the same way.
    assert written[0]["arguments"] == {"code": "[REDACTED]"}
    assert written[2]["output"]["bytes"] == len("[REDACTED] ") + 3_000_000
    assert written[1]["bounded"] == ["/arguments/n"]
    log.close()
    assert verify(tmp_path / "audit.jsonl").ok

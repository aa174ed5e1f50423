"""Rotation by size: the chain goes on across files, and verify and tail read them all."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from pathlib import Path
from typing import Any

from orchestrator.audit import AuditEvent, AuditLog, AuditRecord, tail, verify


def record(index: int) -> AuditRecord:
    return AuditRecord(event=AuditEvent.CALL, call_id=f"c{index}", tool="python.run", status="ok")


def files_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


def test_the_chain_continues_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=1000, fsync=False)
    written = [log.append(record(i)) for i in range(40)]
    rotated = [p for p in files_of(path) if p != path]
    assert len(rotated) >= 5
    names = [p.name for p in rotated]
    assert names == sorted(names) and all(len(n) == len("audit.jsonl.") + 12 for n in names)
    for file in rotated:
        assert 1000 <= file.stat().st_size < 1300, "rotated once past the size"
        first = json.loads(file.read_text().splitlines()[0])
        assert file.name == f"audit.jsonl.{first['seq']:012d}", "named by its first record"
    second = json.loads(rotated[1].read_text().splitlines()[0])
    last_of_first = json.loads(rotated[0].read_text().splitlines()[-1])
    assert second["prev"] == last_of_first["hash"] and second["seq"] == last_of_first["seq"] + 1
    report = verify(path)
    assert report.ok and report.records == 40 and report.last_hash == written[-1]["hash"]
    assert report.files == (*rotated, path)
    assert [r["seq"] for r in tail(path)] == list(range(40))


def test_a_new_writer_resumes_after_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    last = None
    log = AuditLog(path, rotate_bytes=300, fsync=False)
    while not files_of(path)[:-1] or path.stat().st_size:  # until a rotation left it empty
        last = log.append(record(0))
    assert last is not None
    resumed = AuditLog(path).append(record(1))  # knows nothing of the first writer
    assert (resumed["seq"], resumed["prev"]) == (last["seq"] + 1, last["hash"])
    assert verify(path).ok


def test_verify_names_the_file_of_a_tampered_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=1000, fsync=False)
    for i in range(30):
        log.append(record(i))
    rotated = [p for p in files_of(path) if p != path]
    lines = rotated[1].read_text().splitlines(keepends=True)
    rotated[1].write_text("".join(lines[:1] + lines[2:]))  # a record removed
    report = verify(path)
    assert not report.ok and (report.file, report.line) == (rotated[1], 2)
    assert "records before it were removed" in report.problem


def test_a_removed_rotated_file_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=1000, fsync=False)
    for i in range(30):
        log.append(record(i))
    rotated = [p for p in files_of(path) if p != path]
    rotated[1].unlink()
    report = verify(path)
    assert not report.ok and (report.file, report.line) == (rotated[2], 1)
    rotated[0].unlink()  # the oldest file: the chain no longer starts at its beginning
    report = verify(path)
    assert not report.ok and report.file == rotated[2] and "seq" in report.problem


def test_without_a_current_file_the_rotated_ones_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=300, fsync=False)
    written: list[dict[str, Any]] = []
    while len(written) < 5 or path.stat().st_size:  # until a rotation left it empty
        written.append(log.append(record(0)))
    log.close()
    path.unlink()  # e.g. a crash right after a rotation, before the new file was created
    report = verify(path)
    assert report.ok and report.records == len(written)
    assert AuditLog(path).append(record(1))["seq"] == len(written)


async def test_tail_follows_into_the_next_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=800, fsync=False)
    log.append(record(0))
    follower = tail(path, follow=True, poll_s=0.001)
    assert next(follower)["seq"] == 0
    for i in range(1, 30):
        await log.write(record(i))
    assert len(files_of(path)) > 3
    assert [next(follower)["seq"] for _ in range(29)] == list(range(1, 30))


def _hammer(path: str, count: int) -> None:
    async def write_all() -> None:
        log = AuditLog(Path(path), rotate_bytes=4000, fsync=False)
        for start in range(0, count, 10):  # batches of up to ten, racing the other processes
            await asyncio.gather(*(log.write(record(i)) for i in range(start, start + 10)))
        log.close()

    asyncio.run(write_all())


def test_processes_rotating_one_log_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(str(path), 150)) for _ in range(3)]
    for worker in workers:
        worker.start()
    _hammer(str(path), 150)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    report = verify(path)
    assert report.ok, report
    assert report.records == 600 and len(report.files) > 5
    assert [r["seq"] for r in tail(path)] == list(range(600))

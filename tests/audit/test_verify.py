"""Verifying the chain: every edit, removal, insertion and reordering shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.audit import (
    AuditEvent,
    AuditLog,
    AuditRecord,
    canonical_json,
    encode_record,
    tail,
    verify,
)


def write_log(path: Path, count: int = 5) -> list[dict[str, object]]:
    log = AuditLog(path, fsync=False)
    return [
        log.append(AuditRecord(event=AuditEvent.CALL, tool="python.run", status="ok", retries=i))
        for i in range(count)
    ]


def rewrite(path: Path, how: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "edit":
        record = json.loads(lines[2])
        record["status"] = "error"
        lines[2] = canonical_json(record) + b"\n"
    elif how == "edit-and-rehash":
        record = json.loads(lines[2])
        record["status"] = "error"
        del record["hash"]
        lines[2] = encode_record(record)[0] + b"\n"
    elif how == "reformat":
        lines[2] = json.dumps(json.loads(lines[2]), indent=None).encode() + b"\n"
    elif how == "remove":
        del lines[2]
    elif how == "remove-first":
        del lines[0]
    elif how == "insert-copy":
        lines.insert(2, lines[1])
    elif how == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif how == "not-json":
        lines[3] = b"hello\n"
    elif how == "truncate-line":
        lines[-1] = lines[-1][:-10]
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("how", "line", "problem"),
    [
        ("edit", 3, "record was edited"),
        ("edit-and-rehash", 4, "prev is not the hash of the record before"),
        ("reformat", 3, "record was edited"),
        ("remove", 3, "seq 3 where 2 was expected: records before it were removed or moved"),
        ("remove-first", 1, "seq 1 where 0 was expected"),
        ("insert-copy", 3, "seq 1 where 2 was expected: a record was inserted, repeated or moved"),
        ("reorder", 2, "seq 2 where 1 was expected"),
        ("not-json", 4, "not a JSON record"),
        ("truncate-line", 5, "incomplete last line"),
    ],
)
def test_tampering_names_the_first_bad_line(
    tmp_path: Path, how: str, line: int, problem: str
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rewrite(path, how)
    report = verify(path)
    assert (report.ok, report.line) == (False, line), report
    assert problem in report.problem
    assert report.records == line - 1
    good = path.read_bytes().splitlines()[: line - 1]
    assert report.last_hash == (json.loads(good[-1])["hash"] if good else "0" * 64)


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = write_log(path)
    report = verify(path)
    assert (report.ok, report.records, report.line, report.problem) == (True, 5, None, "")
    assert report.last_hash == written[-1]["hash"]
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert verify(empty).ok and verify(empty).records == 0


def test_tail_reads_and_follows(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    assert [record["seq"] for record in tail(path)] == [0, 1, 2]
    follower = tail(path, follow=True, poll_s=0.01)
    assert [next(follower)["seq"] for _ in range(3)] == [0, 1, 2]
    with path.open("ab") as handle:  # a record arriving in two writes is held back until whole
        AuditLog(tmp_path / "other.jsonl").append({"event": "run_started"})
        line = (tmp_path / "other.jsonl").read_bytes()
        handle.write(line[:10])
        handle.flush()
        stop = {"now": False}
        partial = tail(path, follow=True, poll_s=0.01, stop=lambda: stop["now"])
        assert [next(partial)["seq"] for _ in range(3)] == [0, 1, 2]
        handle.write(line[10:])
    assert next(follower)["event"] == "run_started"
    assert next(partial)["event"] == "run_started"
    stop["now"] = True
    assert list(partial) == []


def audit_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOCKADE_HOME": str(home)} if home else None
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "audit", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("command", ["verify", "tail", "timeline"])
def test_cli_without_a_log_says_so(tmp_path: Path, command: str) -> None:
    """Nothing recorded yet (a fresh state directory, a mistyped path): a usage error, not a
    traceback; tail and timeline printed nothing and exited 0, as for an empty log."""
    missing = audit_cli(command, home=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == (  # one line: the usage lines would say nothing about the log
        f"Error: no audit log at {tmp_path / 'audit.jsonl'}: nothing is recorded there yet; "
        "name the log (PATH) or the configuration whose audit.path it is (--config)\n"
    )
    assert "Traceback" not in missing.stderr


def test_cli_verify_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    ok = audit_cli("verify", str(path))
    assert ok.returncode == 0 and "3 records, chain intact" in ok.stdout
    assert len(audit_cli("tail", str(path)).stdout.splitlines()) == 3
    rewrite(path, "edit")
    broken = audit_cli("verify", str(path))
    assert broken.returncode == 1 and f"{path}:3: record was edited" in broken.stderr


def test_cli_verify_checks_every_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, rotate_bytes=1000, fsync=False)
    for i in range(30):
        log.append(AuditRecord(event=AuditEvent.CALL, tool="python.run", retries=i))
    rotated = sorted(tmp_path.glob("audit.jsonl.*"))
    ok = audit_cli("verify", str(path))
    assert ok.returncode == 0, ok.stderr
    assert f"30 records, chain intact across {len(rotated) + 1} files" in ok.stdout
    assert len(audit_cli("tail", str(path)).stdout.splitlines()) == 30
    rewrite(rotated[1], "edit")
    broken = audit_cli("verify", str(path))
    assert broken.returncode == 1 and f"{rotated[1]}:3: record was edited" in broken.stderr

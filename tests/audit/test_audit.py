"""The audit log's hash chain shows every edit, removal, insertion and reordering."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.audit import AuditLog, redact, tail, verify


def write_log(path: Path, count: int = 5) -> AuditLog:
    log = AuditLog(path)
    for index in range(count):
        log.append("tool_call", tool="python.run", index=index, status="ok")
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    report = verify(path)
    assert report.ok and report.records == 5
    assert [record["seq"] for record in tail(path)] == [0, 1, 2, 3, 4]


def test_chain_resumes_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    AuditLog(path).append("restart")
    assert verify(path).ok and verify(path).records == 3


def tamper(path: Path, how: str) -> None:
    content = lines(path)
    if how == "edit":
        record = json.loads(content[2])
        record["status"] = "error"
        content[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    elif how == "remove":
        del content[2]
    elif how == "insert":
        content.insert(2, content[1])
    elif how == "reorder":
        content[1], content[2] = content[2], content[1]
    elif how == "truncate-first":
        del content[0]
    path.write_text("".join(content))


@pytest.mark.parametrize(
    ("how", "line", "problem"),
    [
        ("edit", 3, "edited"),
        ("remove", 3, "removed, inserted or moved"),
        ("insert", 3, "removed, inserted or moved"),
        ("reorder", 2, "removed, inserted or moved"),
        ("truncate-first", 1, "removed, inserted or moved"),
    ],
)
def test_tampering_is_detected(tmp_path: Path, how: str, line: int, problem: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    tamper(path, how)
    report = verify(path)
    assert not report.ok
    assert report.line == line
    assert problem in report.problem


def test_redaction(tmp_path: Path) -> None:
    patterns = [r"sk-[A-Za-z0-9]{10,}", r"(?i)password=\S+"]
    log = AuditLog(tmp_path / "a.jsonl", redact_patterns=patterns)
    record = log.append(
        "tool_call",
        arguments={"code": "key = 'sk-abcdefghijklmnop'", "env": ["PASSWORD=hunter2", "x"]},
    )
    text = (tmp_path / "a.jsonl").read_text()
    assert "sk-abc" not in text and "hunter2" not in text
    assert record["arguments"]["env"] == ["[REDACTED]", "x"]
    assert redact({"n": 1, "s": "sk-0123456789ab"}, [re.compile(patterns[0])]) == {
        "n": 1,
        "s": "[REDACTED]",
    }


def _append_many(path: str, count: int) -> None:
    log = AuditLog(Path(path))
    for index in range(count):
        log.append("tool_call", index=index)


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    threads = [threading.Thread(target=_append_many, args=(str(path), 25)) for _ in range(2)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(str(path), 25)) for _ in range(2)]
    for worker in [*threads, *processes]:
        worker.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    report = verify(path)
    assert report.ok and report.records == 100


def test_cli_verify_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)

    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "audit", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    ok = stockade("verify", str(path))
    assert ok.returncode == 0 and "3 records, chain intact" in ok.stdout
    assert len(stockade("tail", str(path)).stdout.splitlines()) == 3
    tamper(path, "edit")
    broken = stockade("verify", str(path))
    assert broken.returncode == 1 and f"{path}:3: record was edited" in broken.stderr

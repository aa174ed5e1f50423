"""Writing the audit log: records, the chain across writers, redaction, torn lines."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from orchestrator.audit import (
    GENESIS,
    AuditEvent,
    AuditLog,
    AuditRecord,
    record_hash,
    verify,
)
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.policy import Effect, RateLimitAnswer
from orchestrator.sandbox.egress import EgressConnection


def call_record(index: int = 0) -> AuditRecord:
    return AuditRecord(event=AuditEvent.CALL, call_id=f"c{index}", tool="python.run", status="ok")


@pytest.mark.parametrize(
    "moment",
    [
        1_700_000_000.25,
        1_700_000_000.9999996,  # rounds up into the next second
        1_797_964_259.1549525,  # a half microsecond, as a float sees it
        85_958_821.0636355,
        59.9999999,
        0.0,
        -0.5,
    ],
)
def test_timestamps_read_as_datetime_writes_them(tmp_path: Path, moment: float) -> None:
    """The log formats its timestamps itself (the date once a second); the text is
    datetime's, rounding included."""
    log = AuditLog(tmp_path / "audit.jsonl", clock=lambda: moment)
    written = log.append(call_record())
    expected = datetime.fromtimestamp(moment, tz=UTC).isoformat(timespec="microseconds")
    assert written["ts"] == expected.replace("+00:00", "Z")
    log.close()


def test_a_record_carries_everything_the_gateway_knows(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", clock=lambda: 1_700_000_000.25)
    written = log.append(
        {
            "event": "call",
            "call_id": "c1",
            "run_id": "r1",
            "principal": "ada",
            "tool": "http.fetch",
            "arguments": {"url": "https://example.com"},
            "decision": Effect.REQUIRE_APPROVAL,
            "rule": "http-write",
            "approval": {"request_id": "a1", "status": "approved", "decided_by": "bob"},
            "rate_limit": RateLimitAnswer(allowed=True),  # the limiter's own answer type
            "retries": 1,
            "sandbox_profile": "http",
            "image_digest": "sha256:abc",
            "status": "ok",
            "exit_code": 0,
            "duration_s": 0.5,
            "output_bytes": 1234,
            "egress": [EgressConnection(host="example.com", port=443, allowed=True, bytes_in=99)],
        }
    )
    assert written["seq"] == 0 and written["prev"] == GENESIS
    assert written["ts"] == "2023-11-14T22:13:20.250000Z"
    assert written["hash"] == record_hash(written)
    assert written["egress"][0]["host"] == "example.com" and written["egress"][0]["bytes_in"] == 99
    assert written["rate_limit"] == {"allowed": True}, "defaults are left out"
    assert "error" not in written, "absent fields are left out"
    (line,) = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(line) == written


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="statuss"):
        AuditRecord.model_validate({"event": "call", "statuss": "ok"})


def test_the_chain_resumes_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path)
    records = [first.append(call_record(i)) for i in range(2)]
    second = AuditLog(path).append({"event": "run_finished"})
    assert (second["seq"], second["prev"]) == (2, records[-1]["hash"])
    third = first.append(call_record(3))  # the first writer notices the second one's record
    assert (third["seq"], third["prev"]) == (3, second["hash"])
    assert verify(path).ok and verify(path).records == 4


def test_redaction_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, redact_patterns=[r"sk-[A-Za-z0-9]{10,}", r"(?i)^password$"])
    written = log.append(
        {
            "event": "call",
            "tool": "python.run",
            "arguments": {"code": "key = 'sk-abcdefghijklmnop'", "password": "hunter2"},
            "approval": {
                "request_id": "a",
                "status": "approved",
                "edited_arguments": {"code": "k='sk-abcdefghijklmnop'"},
            },
            "error": "auth failed for sk-abcdefghijklmnop",
        }
    )
    text = path.read_text()
    assert "abcdefghijklmnop" not in text and "hunter2" not in text
    assert written["arguments"] == {"code": "key = '[REDACTED]'", "password": "[REDACTED]"}
    assert written["tool"] == "python.run"
    assert verify(path).ok


def _append_many(path: str, count: int) -> None:
    log = AuditLog(Path(path), fsync=False)
    for index in range(count):
        log.append(call_record(index))


def test_concurrent_threads_and_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    shared = AuditLog(path, fsync=False)
    threads = [
        threading.Thread(target=lambda: [shared.append(call_record(i)) for i in range(25)])
        for _ in range(2)
    ]
    threads.append(threading.Thread(target=_append_many, args=(str(path), 25)))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(str(path), 25)) for _ in range(2)]
    workers: list[threading.Thread | BaseProcess] = [*threads, *processes]
    for worker in workers:
        worker.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    report = verify(path)
    assert report.ok and report.records == 125


def test_a_torn_last_line_is_cut_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(call_record(0))
    with path.open("ab") as handle:
        handle.write(b'{"seq":1,"ts":"2026-')  # a writer died mid-write
    assert verify(path).problem == "incomplete last line (a write was cut short)"
    written = AuditLog(path).append(call_record(1))
    assert written["seq"] == 1
    assert verify(path).ok and verify(path).records == 2
    assert "torn last line" in caplog.text


def test_a_garbled_last_line_stops_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append(call_record(0))
    with path.open("ab") as handle:
        handle.write(b"garbage\n")
    with pytest.raises(InfrastructureError) as caught:
        AuditLog(path).append(call_record(1))
    assert caught.value.code is ErrorCode.AUDIT and not caught.value.retryable
    assert "last line is not an audit record" in str(caught.value)


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "audit.jsonl"
    AuditLog(path).append(call_record())
    assert path.stat().st_mode & 0o077 == 0

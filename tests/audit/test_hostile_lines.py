"""Lines no writer makes but anyone with the file can: readers name them, and never crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.audit import AuditLog, encode_record, tail, verify
from orchestrator.cli import cli
from orchestrator.errors import InfrastructureError

# Deeper than the JSON parser's recursion allows.
NESTED = b"[" * 100_000 + b"]" * 100_000 + b"\n"


def write_log(path: Path, count: int = 4) -> None:
    log = AuditLog(path, fsync=False, group_commit=False)
    try:
        for index in range(count):
            common = {"call_id": f"c{index}", "run_id": "r1", "tool": "python.run"}
            log.append({"event": "intent", "attempt": 1, **common})
    finally:
        log.close()


def replace_line(path: Path, index: int, line: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = line
    path.write_bytes(b"".join(lines))


def rehash_from(path: Path, index: int, **changes: object) -> None:
    """Change line ``index`` and rehash the chain from there on, as a forger would."""
    lines = path.read_bytes().splitlines(keepends=True)
    previous = json.loads(lines[index - 1])["hash"] if index else "0" * 64
    for number in range(index, len(lines)):
        record = json.loads(lines[number])
        del record["hash"]
        record["prev"] = previous
        if number == index:
            record.update(changes)
        line, previous = encode_record(record)
        lines[number] = line + b"\n"
    path.write_bytes(b"".join(lines))


def test_verify_names_a_line_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    replace_line(path, 2, NESTED)
    report = verify(path)
    assert (report.ok, report.line, report.problem) == (False, 3, "not a JSON record")


def test_verify_of_a_rehashed_chain_with_odd_field_types_reports_it(tmp_path: Path) -> None:
    """The chain is intact (anyone can compute SHA-256); the types are not what a writer makes."""
    path = tmp_path / "audit.jsonl"
    write_log(path)
    rehash_from(path, 1, call_id=["c1"])
    rehash_from(path, 2, event="call", intents=5)
    report = verify(path)
    assert report.ok, report
    assert [intent.seq for intent in report.open_intents] == [0, 1, 3]


# Each names the run, so a search for the run's lines finds it too.
@pytest.mark.parametrize("bad", [b'hello "r1"\n', b'["r1", ' + NESTED[:-1] + b"]\n", b'["r1"]\n'])
@pytest.mark.parametrize("containing", [None, b'"r1"'])
def test_tail_names_the_file_and_line_of_a_line_that_is_no_record(
    tmp_path: Path, bad: bytes, containing: bytes | None
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    replace_line(path, 2, bad)
    records = tail(path, containing=containing)
    assert [record["seq"] for record in (next(records), next(records))] == [0, 1]
    with pytest.raises(InfrastructureError, match=rf"{path}:3: not an audit record") as caught:
        next(records)
    assert caught.value.op == "audit.read"


def test_the_writer_refuses_a_last_line_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    with path.open("ab") as file:
        file.write(NESTED)
    log = AuditLog(path, fsync=False, group_commit=False)
    try:
        with pytest.raises(InfrastructureError, match="the last line is not an audit record"):
            log.append({"event": "run_started"})
    finally:
        log.close()


def test_a_first_line_nested_too_deeply_is_read_like_any_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(NESTED)
    assert verify(path).problem == "not a JSON record"


@pytest.mark.parametrize("command", ["tail", "timeline"])
def test_the_cli_names_the_bad_line_without_a_traceback(tmp_path: Path, command: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    replace_line(path, 3, b"garbage\n")
    result = CliRunner().invoke(cli, ["audit", command, str(path)])
    assert isinstance(result.exception, InfrastructureError), result.output
    assert f"{path}:4: not an audit record" in str(result.exception)


def test_verify_shows_no_control_sequence_a_forger_put_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    fake = "\x1b[2K\rlog: ok, 4 records, chain intact\x1b[8m"
    rehash_from(path, 1, call_id=f"c1{fake}")
    rehash_from(path, 2, seq=fake)
    result = CliRunner().invoke(cli, ["audit", "verify", str(path)])
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "where 2 was expected" in result.output


def test_the_timeline_shows_a_rehashed_log_whatever_its_fields_hold(tmp_path: Path) -> None:
    """A forger's types (a duration that is text, no seq, an approval that is a list) made
    `audit timeline` stop with a traceback; it shows the records, `audit verify` judges them."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync=False) as log:
        common = {"run_id": "r", "tool": "python.run", "call_id": "c1"}
        log.append(
            {
                "event": "approval_requested",
                "approval": {"request_id": "a", "status": "pending"},
                **common,
            }
        )
        log.append({"event": "intent", "attempt": 1, **common})
        log.append({"event": "call", "status": "ok", "duration_s": 0.5, **common})
    rehash_from(path, 0, approval=["x"])
    rehash_from(path, 1, seq=None)
    rehash_from(path, 2, duration_s="soon", seq="7")
    shown = CliRunner().invoke(cli, ["audit", "timeline", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "outcome: ok in 'soon' s" in shown.output
    assert "  seq None  " in shown.output and "approval_requested: \n" in shown.output + "\n"

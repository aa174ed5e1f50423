"""One run's call timeline: exactly its records, across rotated files, whatever else quotes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.audit import AuditLog
from orchestrator.audit._verify import tail
from orchestrator.audit.timeline import call_timeline
from orchestrator.cli import cli


def _log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    # Rotating every few records puts the run's calls in several files.
    log = AuditLog(path, fsync=False, rotate_bytes=1024, group_commit=False)
    try:
        calls = [
            ("c1", "r1", {"code": "print(1)"}),
            ("c2", "r10", {"code": "print(2)"}),  # r1 is a prefix of its id
            # Another run's argument quoting the text of r1's records.
            ("c3", "r2", {"code": 'note = \'"run_id":"r1"\''}),
            ("c4", "r1", {"code": "print(4)"}),
            ("c5", "rün", {"code": "print(5)"}),  # escaped in the log's ASCII JSON
            ("c6", "r1", {"code": "print(6)"}),
        ]
        for call_id, run_id, arguments in calls:
            common = {"call_id": call_id, "run_id": run_id, "tool": "python.run"}
            log.append({"event": "intent", "attempt": 1, "arguments": arguments, **common})
            log.append({"event": "call", "status": "ok", "arguments": arguments, **common})
    finally:
        log.close()
    # A line some other tool wrote, not in the log's canonical form.
    with path.open("a") as file:
        file.write(json.dumps({"event": "call", "call_id": "c7", "run_id": "r1"}) + "\n")
    return path


def test_a_runs_timeline_holds_its_calls_only_in_order_across_rotated_files(
    tmp_path: Path,
) -> None:
    path = _log(tmp_path)
    assert len(list(tmp_path.iterdir())) > 2  # rotated more than once
    entries = call_timeline(path, run_id="r1")
    assert [entry.call_id for entry in entries] == ["c1", "c4", "c6", "c7"]
    assert all(entry.outcome is not None for entry in entries)
    assert [entry.call_id for entry in call_timeline(path, run_id="rün")] == ["c5"]
    assert [entry.call_id for entry in call_timeline(path, run_id="r2")] == ["c3"]
    assert call_timeline(path, run_id="r3") == []
    assert len(call_timeline(path)) == 7


def test_following_the_log_cannot_skip_lines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="follow"):
        next(tail(_log(tmp_path), follow=True, containing=b"r1"))


def test_lines_across_blocks_are_found_whole_and_a_line_being_written_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _log(tmp_path)
    with path.open("a") as file:  # a writer that has not finished its line
        file.write('{"event": "call", "call_id": "c8", "run_id": "r1"')
    monkeypatch.setattr("orchestrator.audit._verify._BLOCK", 97)  # lines span blocks
    entries = call_timeline(path, run_id="r1")
    assert [entry.call_id for entry in entries] == ["c1", "c4", "c6", "c7"]


def test_the_cli_shows_what_a_call_changed_and_no_control_sequence(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        common = {"event": "call", "run_id": "r", "tool": "python.run", "status": "error"}
        log.append({**common, "call_id": "c1", "files_changed": ["a.txt", "b/c.txt"],
                    "error": "failed\x1b]52;c;cm0gLXJm\x07 here"})  # fmt: skip
        log.append({**common, "call_id": "c2", "files_changed": ["a.txt"]})
    shown = CliRunner().invoke(cli, ["audit", "timeline", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "error in 0.000 s, 2 workspace paths changed: failed here" in shown.output
    assert "error in 0.000 s, 1 workspace path changed" in shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output


def test_a_traceback_stays_under_its_outcome_and_a_cut_error_shows_its_head(
    tmp_path: Path,
) -> None:
    """A tool's traceback reached the margin where calls begin, and a bounded error (one
    over the record cap) printed as a Python dict."""
    path = tmp_path / "audit.jsonl"
    traceback = (
        "KeyError: 'x'\nTraceback (most recent call last):\n  File \"t.py\", line 1\nKeyError: 'x'"
    )
    with AuditLog(path, max_value_bytes=128) as log:
        common = {"event": "call", "run_id": "r", "tool": "acme.t", "status": "error"}
        log.append({**common, "call_id": "c1", "error": traceback})
        log.append({**common, "call_id": "c2", "error": "boom " + "x" * 200})
    shown = CliRunner().invoke(cli, ["audit", "timeline", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.endswith("error in 0.000 s: KeyError: 'x'")
    )
    assert lines[start + 1 : start + 5] == [
        "      Traceback (most recent call last):",
        '        File "t.py", line 1',
        "      KeyError: 'x'",
        "c2  acme.t  error",
    ]
    cut = next(line for line in lines if "boom" in line)
    assert cut.endswith(": boom " + "x" * 123) and "{" not in cut
    marker = lines[lines.index(cut) + 1]
    assert marker.startswith("      [… cut: 205 bytes in all, sha256 ") and marker.endswith("]")


def test_a_run_without_calls_is_said_not_an_empty_screen(tmp_path: Path) -> None:
    path = _log(tmp_path)
    shown = CliRunner().invoke(cli, ["audit", "timeline", "--run", "r9", str(path)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == ""
    assert shown.stderr == f"no calls of run 'r9' in {path}\n"
    as_json = CliRunner().invoke(cli, ["audit", "timeline", "--json", "--run", "r9", str(path)])
    assert json.loads(as_json.stdout) == [] and as_json.stderr == ""

"""Bounded records: large values become digest, size and head; the log says which."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest

from orchestrator.audit import AuditLog, canonical_json, verify
from orchestrator.audit._bound import bound_record, bound_value


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_value_up_to_the_cap_is_kept_as_it_is() -> None:
    value = "x" * 100
    assert bound_value(value, 100) is value
    assert bound_value({"a": [1, 2]}, 100) == {"a": [1, 2]}
    assert bound_value(10**30, 4) == 10**30, "numbers are never replaced"


def test_a_larger_string_becomes_digest_size_and_head() -> None:
    value = "é" * 100  # 200 bytes of UTF-8
    bounded = bound_value(value, 101)
    assert bounded == {
        "sha256": digest(value.encode()),
        "bytes": 200,
        "head": "é" * 50,  # 101 bytes would cut a character in half
    }


def test_a_larger_structure_is_hashed_as_canonical_json() -> None:
    value = {"rows": list(range(100))}
    bounded = bound_value(value, 64)
    encoded = canonical_json(value)
    assert bounded == {
        "sha256": digest(encoded),
        "bytes": len(encoded),
        "head": encoded[:64].decode(),
    }


def test_a_record_lists_what_was_replaced() -> None:
    body: dict[str, Any] = {
        "event": "call",
        "tool": "files.write",
        "arguments": {"path": "a/b.txt", "content": "x" * 500, "odd/key~": "y" * 500},
        "output": "z" * 500,
        "error": "short",
        "detail": {"raw_arguments": "r" * 500},
        "approval": {"request_id": "a", "status": "approved", "edited_arguments": {"c": "e" * 500}},
    }
    replaced = bound_record(body, 100)
    assert replaced == [
        "/arguments/content",
        "/arguments/odd~1key~0",
        "/output",
        "/detail/raw_arguments",
        "/approval/edited_arguments/c",
    ]
    assert body["arguments"]["path"] == "a/b.txt" and body["error"] == "short"
    assert (
        body["output"]["bytes"] == 500 and body["approval"]["edited_arguments"]["c"]["bytes"] == 500
    )


def test_the_log_bounds_after_redacting(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, redact_patterns=[r"sk-[a-z]{10,}"], max_value_bytes=64)
    code = "k = 'sk-" + "a" * 60 + "'\n" + "x" * 1000
    written = log.append({"event": "call", "arguments": {"code": code}})
    kept = written["arguments"]["code"]
    redacted = code.replace("sk-" + "a" * 60, "[REDACTED]")
    assert kept["head"] == redacted[:64] and "aaaaaaaaaa" not in path.read_text()
    assert kept["sha256"] == digest(redacted.encode()), "the digest is of the value as recorded"
    assert written["bounded"] == ["/arguments/code"]
    assert verify(path).ok


def test_the_workspace_paths_a_call_changed_are_bounded_as_one_list(tmp_path: Path) -> None:
    """A sandbox names its files: 10 000 of them with long names would fill the log."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, redact_patterns=[r"sk-[a-z]{10,}"], max_value_bytes=256)
    many = [f"{index:05}-" + "n" * 200 for index in range(10_000)]
    written = log.append(
        {"event": "call", "files_changed": many, "files_rejected": ["sk-abcdefghijkl: FIFO"]}
    )
    assert written["files_changed"]["bytes"] > 2_000_000
    assert written["files_changed"]["head"].startswith('["00000-nnn')
    assert written["files_rejected"] == ["[REDACTED]: FIFO"]
    assert written["bounded"] == ["/files_changed"]
    assert path.stat().st_size < 2_000 and verify(path).ok


def test_a_value_shaped_like_a_replacement_is_not_listed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    forged = {"sha256": "0" * 64, "bytes": 1, "head": "x"}
    written = log.append({"event": "call", "arguments": {"data": forged}})
    assert written["arguments"]["data"] == forged and "bounded" not in written


def test_numbers_json_cannot_hold_do_not_stop_the_log(tmp_path: Path) -> None:
    # Python's json reads NaN, so a model can send it; JSON cannot hold it.
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    written = log.append(
        {"event": "call", "arguments": {"timeout_s": math.nan, "n": [math.inf, -math.inf, 1.5]}}
    )
    assert written["arguments"] == {"timeout_s": None, "n": [None, None, 1.5]}
    assert verify(path).ok


def test_the_cap_has_a_floor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_value_bytes"):
        AuditLog(tmp_path / "audit.jsonl", max_value_bytes=10)
    with pytest.raises(ValueError, match="rotate_bytes"):
        AuditLog(tmp_path / "audit.jsonl", rotate_bytes=0)

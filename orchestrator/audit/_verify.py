"""Reading the audit log: checking its chain, and following it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.audit._chain import GENESIS, encode_record

__all__ = ["VerifyReport", "tail", "verify"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """The outcome of checking a log's chain."""

    ok: bool
    """Every line is an intact record, chained to the one before."""
    records: int
    """Records that checked out before the first problem (all of them when ok)."""
    line: int | None = None
    """The first bad line (1-based); None when ok."""
    problem: str = ""
    """What is wrong with that line."""
    last_hash: str = GENESIS
    """Hash of the last good record. A chain cannot show that records were cut
    off its end: compare this (or ``records``) with a copy kept elsewhere."""


def _intact(raw: bytes) -> dict[str, Any] | str:
    """The record on this line, or what is wrong with the line on its own."""
    if not raw.endswith(b"\n"):
        return "incomplete last line (a write was cut short)"
    try:
        record = json.loads(raw)
    except ValueError:
        return "not a JSON record"
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "not an audit record (no hash)"
    body = {key: value for key, value in record.items() if key != "hash"}
    line, digest = encode_record(body)
    if record["hash"] != digest or raw != line + b"\n":
        return "record was edited: its content does not match its hash"
    return record


def _problem(record: dict[str, Any], expected_seq: int, previous: str) -> str | None:
    """What is wrong with an intact record's place in the chain."""
    seq = record.get("seq")
    if seq != expected_seq:
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > expected_seq:
            what = "records before it were removed or moved"
        else:
            what = "a record was inserted, repeated or moved"
        return f"seq {seq} where {expected_seq} was expected: {what}"
    if record.get("prev") != previous:
        return "prev is not the hash of the record before: that record was edited or replaced"
    return None


def verify(path: str | Path) -> VerifyReport:
    """Walk the chain; report the first line that was edited, removed, inserted or moved."""
    previous, count = GENESIS, 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            record = _intact(raw)
            problem = record if isinstance(record, str) else _problem(record, count, previous)
            if problem is not None:
                return VerifyReport(
                    ok=False, records=count, line=number, problem=problem, last_hash=previous
                )
            assert isinstance(record, dict)
            previous, count = record["hash"], count + 1
    return VerifyReport(ok=True, records=count, last_hash=previous)


def tail(
    path: str | Path,
    *,
    follow: bool = False,
    poll_s: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """The log's records in order; with ``follow``, keep yielding new ones as they arrive.

    A line still being written is held back until it is complete. Following
    polls every ``poll_s`` seconds and ends when ``stop()`` returns true.
    """
    with Path(path).open("rb") as handle:
        pending = b""
        while True:
            chunk = handle.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    record = json.loads(pending)
                    pending = b""
                    yield record
                continue
            if not follow or stop():
                return
            time.sleep(poll_s)

"""The audit log: append-only JSON lines, chained by SHA-256 so tampering shows.

Each record holds its sequence number, time, the hash of the record before it
and its own hash over the canonical JSON of everything else. ``verify`` walks
the chain and names the first line that was edited, removed, inserted or
moved. Appends take an exclusive ``flock`` and resume the chain from the
file's last record, so several orchestrator processes can share one log.
Each append is flushed and ``fsync``-ed before ``append`` returns: a record
reported as written survives a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GENESIS", "AuditLog", "VerifyReport", "redact", "tail", "verify"]

GENESIS = "0" * 64
"""The ``prev`` of the first record."""
REDACTED = "[REDACTED]"


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(record: dict[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def redact(value: Any, patterns: list[re.Pattern[str]]) -> Any:
    """A copy of ``value`` with every match of ``patterns`` in its strings replaced."""
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {key: redact(item, patterns) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, patterns) for item in value]
    return value


def _last_record(handle: Any) -> dict[str, Any] | None:
    """The last complete line of an open file, read from the end."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    chunk, position = b"", end
    while position > 0:
        step = min(65536, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step) + chunk
        lines = chunk.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or position == 0:
            last = lines[-1]
            return json.loads(last) if last.strip() else None
    return None


class AuditLog:
    """Appends records to one audit file."""

    def __init__(self, path: Path, *, redact_patterns: Sequence[str] = ()) -> None:
        self._path = path
        self._patterns = [re.compile(pattern) for pattern in redact_patterns]
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record (strings redacted) and return it, hash and all."""
        body = redact(fields, self._patterns)
        with self._lock, self._path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last = _last_record(handle)
                record: dict[str, Any] = {
                    "seq": (last["seq"] + 1) if last else 0,
                    "time": time.time(),
                    "event": event,
                    **body,
                    "prev": last["hash"] if last else GENESIS,
                }
                record["hash"] = _digest(record)
                handle.seek(0, os.SEEK_END)
                handle.write(_canonical(record) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """The outcome of checking a log's chain."""

    ok: bool
    records: int
    """Records that checked out before the first problem (all of them when ok)."""
    line: int | None = None
    """The first bad line (1-based)."""
    problem: str = ""


def verify(path: Path) -> VerifyReport:
    """Check every record's hash and link; report the first break."""
    previous, expected_seq, count = GENESIS, 0, 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                return VerifyReport(
                    ok=False, records=count, line=number, problem="not a JSON record"
                )
            if not isinstance(record, dict) or record.get("hash") != _digest(record):
                return VerifyReport(
                    ok=False,
                    records=count,
                    line=number,
                    problem="record was edited (hash mismatch)",
                )
            if record.get("prev") != previous or record.get("seq") != expected_seq:
                return VerifyReport(
                    ok=False,
                    records=count,
                    line=number,
                    problem=f"chain broken: expected seq {expected_seq} after the record before "
                    f"(found seq {record.get('seq')}); a record was removed, inserted or moved",
                )
            previous, expected_seq, count = record["hash"], expected_seq + 1, count + 1
    return VerifyReport(ok=True, records=count)


def tail(path: Path, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[dict[str, Any]]:
    """The records of a log; with ``follow``, keep yielding new ones as they are written."""
    with path.open("rb") as handle:
        pending = b""
        while True:
            chunk = handle.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    yield json.loads(pending)
                    pending = b""
                continue
            if not follow:
                return
            time.sleep(poll_s)

"""Appending to the audit log: one writer at a time, across threads and processes.

Durability (the fsync policy): with ``fsync=True`` (the default) every
``append`` is written with one ``write`` and ``fsync``-ed before it returns,
so a record reported as written survives a crash or power loss; the
directory is synced too when the file is created. With ``fsync=False`` the
OS flushes when it likes: appends are much faster, and a power loss may lose
the last records or leave a torn final line. Either way the chain stays
verifiable up to the last complete record.

Concurrency: a thread lock serialises appenders in one process, and an
exclusive ``flock`` on the file serialises processes. Under the lock the
writer resumes the chain from the file's last record, so any number of
processes can share one log. A torn final line (a writer that died
mid-write, never acknowledged) is cut off before the next record is written.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.audit._chain import GENESIS, encode_record
from orchestrator.audit._record import AuditRecord
from orchestrator.audit._redact import redact
from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["AuditLog"]

_log = logging.getLogger(__name__)
_CHUNK = 65536
_REDACTED_FIELDS = ("arguments", "error", "detail")


def _previous_newline(fd: int, before: int) -> int:
    """Offset of the last ``\\n`` before ``before``, or -1."""
    end = before
    while end > 0:
        start = max(0, end - _CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _failure(message: str) -> InfrastructureError:
    return InfrastructureError(message, code=ErrorCode.AUDIT, op="audit.append", retryable=False)


class AuditLog:
    """Appends records to one hash-chained JSON-lines file."""

    def __init__(
        self,
        path: str | Path,
        *,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``redact_patterns`` usually come from the policy's ``redact``; ``clock`` is Unix time."""
        self._path = Path(path)
        self._patterns = [re.compile(pattern) for pattern in redact_patterns]
        self._fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        # (device, inode, size) of the file after our last append, and the head
        # then: if nothing changed, the chain resumes without reading the file.
        self._cache: tuple[tuple[int, int, int], int, str] | None = None
        self._path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def redact_patterns(self) -> tuple[str, ...]:
        """The patterns whose matches never reach the file."""
        return tuple(pattern.pattern for pattern in self._patterns)

    def append(self, record: AuditRecord | Mapping[str, Any]) -> dict[str, Any]:
        """Redact, chain and durably write one record; return it as written.

        Raises :class:`~orchestrator.errors.InfrastructureError` (code
        ``audit``) when the record cannot be written or the file's last line is
        not a record to chain from; the caller should fail closed.
        """
        model = record if isinstance(record, AuditRecord) else AuditRecord.model_validate(record)
        body = self._redacted(model.model_dump(mode="json", exclude_defaults=True))
        with self._lock:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise _failure(f"cannot open {self._path}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                created = os.fstat(fd).st_size == 0
                seq, prev = self._head(fd)
                written: dict[str, Any] = {"seq": seq, "ts": self._timestamp(), "prev": prev}
                written.update(body)
                line, written["hash"] = encode_record(written)
                _write_all(fd, line + b"\n")
                if self._fsync:
                    os.fsync(fd)
                    if created:
                        self._sync_directory()
                stat = os.fstat(fd)
                self._cache = ((stat.st_dev, stat.st_ino, stat.st_size), seq, written["hash"])
            except OSError as exc:
                self._cache = None
                raise _failure(f"cannot write {self._path}: {exc}") from exc
            finally:
                os.close(fd)  # also releases the flock
        return written

    def _redacted(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self._patterns:
            return body
        for field in _REDACTED_FIELDS:
            if field in body:
                body[field] = redact(body[field], self._patterns)
        approval = body.get("approval")
        if approval and "edited_arguments" in approval:
            approval["edited_arguments"] = redact(approval["edited_arguments"], self._patterns)
        return body

    def _timestamp(self) -> str:
        moment = datetime.fromtimestamp(self._clock(), tz=UTC)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _head(self, fd: int) -> tuple[int, str]:
        """The next seq and the hash to chain to, from the file's last record."""
        stat = os.fstat(fd)
        if self._cache is not None and self._cache[0] == (stat.st_dev, stat.st_ino, stat.st_size):
            return self._cache[1] + 1, self._cache[2]
        end = stat.st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            end = _previous_newline(fd, end) + 1
            _log.warning("audit log %s: cutting off a torn last line at byte %d", self._path, end)
            os.ftruncate(fd, end)
        if end == 0:
            return 0, GENESIS
        start = _previous_newline(fd, end - 1) + 1
        try:
            last = _parse(os.pread(fd, end - start, start))
        except ValueError as exc:
            raise _failure(
                f"{self._path}: the last line is not an audit record ({exc}); "
                "run `stockade audit verify` and keep the file for investigation"
            ) from exc
        return last[0] + 1, last[1]

    def _sync_directory(self) -> None:
        fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse(line: bytes) -> tuple[int, str]:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    seq, digest = record.get("seq"), record.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError("no seq or hash")
    return seq, digest

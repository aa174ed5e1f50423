"""The audit log: durable, chained, bounded records, written off the event loop.

Two ways in:

- ``await log.write(record)``, for code on an event loop. The record goes to
  a background writer thread, which commits everything that arrived while it
  was writing the previous batch as one batch: N concurrent callers share one
  ``write`` and one ``fsync`` (group commit), and no event loop ever waits on
  the disk or on another process's file lock. The caller resumes once its
  record is durable. With ``group_commit=False`` the record is appended on the
  caller's thread instead, blocking its loop for the ``fsync`` — how the
  gateway wrote before group commit, kept to measure against.
- ``log.append(record)``, synchronous on the caller's thread, for code
  without a loop (startup, the CLI, tests).

Durability (the fsync policy): with ``fsync=True`` (the default) a record is
reported as written only after the ``fsync`` of its batch, so it survives a
crash or power loss; the directory is synced when a file is created or
rotated. With ``fsync=False`` the OS flushes when it likes: a power loss may
lose the last records or leave a torn final line. Either way the chain stays
verifiable up to the last complete record.

What a record keeps: secrets are redacted first (``redact_patterns``, usually
the policy's ``redact``), then every value of ``arguments``, ``output``,
``error``, ``detail``, ``files_changed`` and ``files_rejected`` larger than
``max_value_bytes`` is replaced by its SHA-256, size and first bytes (see
:mod:`orchestrator.audit._bound`).
Redacting first means a secret cut in half at the end of a head cannot slip
past its pattern; so the digest is of the value as recorded, which is the value
sent whenever no pattern matched it.

Rotation: when the current file has grown to ``rotate_bytes`` it is renamed
``<name>.<seq of its first record>`` and a new file continues the chain (see
:mod:`orchestrator.audit._files`); :func:`~orchestrator.audit.verify` checks
all the files as one chain. Several threads and processes may share one log
(see :mod:`orchestrator.audit._appender` for the locking).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.audit._appender import Appender, audit_failure
from orchestrator.audit._bound import bound_record
from orchestrator.audit._group import GroupCommit, GroupCommitClosed
from orchestrator.audit._record import AuditRecord
from orchestrator.audit._redact import redact, redact_keyed, scrub
from orchestrator.errors import InfrastructureError

__all__ = ["AuditLog"]

_REDACTED_FIELDS = ("arguments", "output", "error", "detail", "files_changed", "files_rejected")
_MIN_VALUE_BYTES = 64
# A record whose redacted fields hold at most this many characters and items
# in all is prepared (dumped, redacted, bounded) by write() on the caller's
# thread; a larger one on the writer thread, so a model's multi-megabyte
# argument never holds up an event loop. Small records are nearly all of them,
# and preparing them where they were built keeps the work off the writer,
# which on this 2-core VM wakes on a CPU that has just slept. Measured side by
# side in one process (gateway_bench's 50-rule gateway, one caller, records
# fsync-ed, load 5-6): 1184-1239 against 1258-1266 µs p50 a call. Without
# fsync it is 25-45 µs slower instead (the writer's preparing overlapped the
# loop's return to its selector), but a log without fsync is not the default.
_PREPARE_ON_LOOP = 16384


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A record already dumped, redacted and bounded; the writer only chains it."""

    body: dict[str, Any]


# Logs whose writer thread may hold records: drained when the interpreter
# exits (the thread is a daemon, so exit does not wait for it otherwise), and
# reset in a forked child (which has the parent's state but not its thread).
_LIVE: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _close_all() -> None:
    for log in list(_LIVE):
        log.close()


def _after_fork_in_child() -> None:
    for log in list(_LIVE):
        log._after_fork()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditLog:
    """Appends bounded, redacted records to one hash-chained JSON-lines log."""

    def __init__(
        self,
        path: str | Path,
        *,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        max_value_bytes: int = 4096,
        rotate_bytes: int | None = 64 * 1024 * 1024,
        group_commit: bool = True,
    ) -> None:
        """Open (lazily) the log at ``path``.

        ``redact_patterns`` usually come from the policy's ``redact``;
        ``clock`` is Unix time. ``max_value_bytes`` (at least 64): a value of
        ``arguments``, ``output``, ``error`` or ``detail`` whose encoding is
        larger is recorded as ``{"sha256", "bytes", "head"}``, the head being
        its first ``max_value_bytes`` bytes. ``rotate_bytes``: once the current
        file has reached this size it is rotated out (None: never rotate).
        ``group_commit=False`` makes :meth:`write` append on the caller's
        thread (blocking its event loop), for comparison only.
        """
        if max_value_bytes < _MIN_VALUE_BYTES:
            raise ValueError(f"max_value_bytes must be at least {_MIN_VALUE_BYTES}")
        if rotate_bytes is not None and rotate_bytes < 1:
            raise ValueError("rotate_bytes must be positive, or None to never rotate")
        self._path = Path(path)
        # Kept as given; redact() compiles them (for RE2) once and caches them.
        self._patterns = tuple(redact_patterns)
        redact("", self._patterns)  # a pattern that does not compile fails here, not later
        self._max_value_bytes = max_value_bytes
        self._rotate_bytes = rotate_bytes
        self._group_commit = group_commit
        self._lock = threading.Lock()
        self._closed = False
        self._appender = Appender(self._path, fsync=fsync, rotate_bytes=rotate_bytes, clock=clock)
        self._group: GroupCommit[AuditRecord | _Prepared, dict[str, Any]] = GroupCommit(
            self._commit, name=f"stockade-audit-writer:{self._path.name}"
        )
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _LIVE.add(self)

    @property
    def path(self) -> Path:
        """The current file (rotated files sit beside it)."""
        return self._path

    @property
    def redact_patterns(self) -> tuple[str, ...]:
        """The patterns whose matches never reach the file."""
        return tuple(p if isinstance(p, str) else p.pattern for p in self._patterns)

    @property
    def max_value_bytes(self) -> int:
        """Values larger than this are recorded as digest, size and head."""
        return self._max_value_bytes

    @property
    def rotate_bytes(self) -> int | None:
        """The size at which the current file is rotated out (None: never)."""
        return self._rotate_bytes

    async def write(self, record: AuditRecord | Mapping[str, Any]) -> dict[str, Any]:
        """Redact, bound, chain and durably write one record, off the event loop.

        Returns the record as written, once it is durable. Raises
        :class:`~orchestrator.errors.InfrastructureError` (code ``audit``) when
        it cannot be written; the caller should fail closed. If the caller is
        cancelled while waiting, the record is written all the same.
        """
        return await self.submit(record)

    def submit(self, record: AuditRecord | Mapping[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Queue one record and return at once; the future resolves when it is durable.

        For a caller that must not wait (a callback) but still needs to know
        whether the record was written. Needs a running event loop. Records
        are written in the order they are submitted, so awaiting a later
        record also proves the earlier ones durable.
        """
        model = _model(record)
        if self._group_commit:
            try:
                return self._group.submit(self._prepared_if_small(model))
            except GroupCommitClosed as exc:
                raise audit_failure(f"the audit log {self._path} is closed") from exc
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.append(model))
        except InfrastructureError as exc:
            future.set_exception(exc)
        return future

    def append(self, record: AuditRecord | Mapping[str, Any]) -> dict[str, Any]:
        """Like :meth:`write`, but on the caller's thread: blocks until the record is durable."""
        body = self._prepare(_model(record))
        with self._lock:
            if self._closed:
                raise audit_failure(f"the audit log {self._path} is closed")
            (outcome,) = self._appender.commit([body])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        """Write what is pending, then release the file and the writer thread.

        Blocks until pending records are durable; on an event loop, prefer
        :meth:`aclose`. Writing afterwards raises.
        """
        self._group.close()
        with self._lock:
            self._closed = True
            self._appender.close()
        _LIVE.discard(self)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _prepared_if_small(self, model: AuditRecord) -> AuditRecord | _Prepared:
        if not _small(model, _PREPARE_ON_LOOP):
            return model
        try:
            return _Prepared(self._prepare(model))
        except Exception:  # the writer meets the same failure and reports it as before
            return model

    def _commit(
        self, records: list[AuditRecord | _Prepared]
    ) -> list[dict[str, Any] | BaseException]:
        """The writer thread's batch: large records are prepared here, off the event loop."""
        bodies = [
            record.body if isinstance(record, _Prepared) else self._prepare(record)
            for record in records
        ]
        with self._lock:
            if self._closed:
                raise audit_failure(f"the audit log {self._path} is closed")
            return list(self._appender.commit(bodies))

    def _prepare(self, model: AuditRecord) -> dict[str, Any]:
        body = model.model_dump(mode="json", exclude_defaults=True)
        if self._patterns:
            hidden: set[str] = set()
            for field in _REDACTED_FIELDS:
                if field in body:
                    body[field] = redact_keyed(body[field], self._patterns, hidden)
            approval = body.get("approval")
            if approval and "edited_arguments" in approval:
                approval["edited_arguments"] = redact_keyed(
                    approval["edited_arguments"], self._patterns, hidden
                )
            if hidden:
                # What a key rule hid is secret wherever else the record quotes it.
                for field in (*_REDACTED_FIELDS, "reason", "approval"):
                    if field in body:
                        body[field] = scrub(body[field], hidden)
        bounded = bound_record(body, self._max_value_bytes)
        if bounded:
            body["bounded"] = bounded
        return body

    def _after_fork(self) -> None:
        # The parent's writer thread does not exist here and its lock may have
        # been held; the descriptor is shared with the parent, and flock locks
        # belong to the open file, so a child must open its own.
        self._lock = threading.Lock()
        self._group.after_fork()
        self._appender.close()


def _small(model: AuditRecord, budget: int) -> bool:
    """Whether the fields redaction and bounding walk hold at most ``budget`` characters
    and items in all (stops counting as soon as they do not)."""
    pending: list[Any] = [model.arguments, model.output, model.error, model.detail]
    pending += (model.files_changed, model.files_rejected)
    if model.approval is not None:
        pending.append(model.approval.edited_arguments)
    budget -= len(model.egress)
    while pending and budget >= 0:
        value = pending.pop()
        if isinstance(value, str):
            budget -= len(value)
        elif isinstance(value, dict):
            budget -= len(value)
            if budget >= 0:
                pending += value.keys()
                pending += value.values()
        elif isinstance(value, list | tuple):
            budget -= len(value)
            if budget >= 0:
                pending += value
    return budget >= 0


def _model(record: AuditRecord | Mapping[str, Any]) -> AuditRecord:
    return record if isinstance(record, AuditRecord) else AuditRecord.model_validate(record)

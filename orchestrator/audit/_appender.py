"""The log's current file: appending batches of records under a lock, and rotating it.

Concurrency: the caller serialises appenders in one process (a thread lock);
an exclusive ``flock`` on the current file serialises processes. Under the
lock the appender checks that its descriptor still names the current file
(another process may have rotated it while we waited), then resumes the chain
from the file's last record — or, for an empty file, from the last record of
the newest rotated file — so any number of processes can share one log. A
torn final line (a writer that died mid-write, never acknowledged) is cut off
before the next record is written.

Durability: one ``write`` and, with ``fsync``, one ``fsync`` per batch; a
batch that cannot be written whole is cut off again, so it is all or nothing.
The directory is synced when the file is created or rotated.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.audit._chain import GENESIS, encode_record, parse_line
from orchestrator.audit._files import archive_path, archives
from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["Appender", "audit_failure"]

_log = logging.getLogger(__name__)
_CHUNK = 65536
# Reopening when another process rotated the file under us; more than a few
# rounds means something keeps removing the file.
_REOPEN_ATTEMPTS = 20


def audit_failure(message: str) -> InfrastructureError:
    """The error of a record that could not be written; the caller should fail closed."""
    return InfrastructureError(message, code=ErrorCode.AUDIT, op="audit.append", retryable=False)


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


def _first_line(fd: int) -> bytes:
    line = b""
    while b"\n" not in line:
        chunk = os.pread(fd, _CHUNK, len(line))
        if not chunk:
            break
        line += chunk
    return line.split(b"\n", 1)[0]


def _last_line(fd: int, end: int) -> bytes:
    start = _previous_newline(fd, end - 1) + 1
    return os.pread(fd, end - start, start)


def _parse(line: bytes) -> tuple[int, str]:
    """The seq and hash of a record's line."""
    record = parse_line(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    seq, digest = record.get("seq"), record.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError("no seq or hash")
    return seq, digest


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


class Appender:
    """Writes batches of records to the log's current file; not thread-safe (lock around it)."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool,
        rotate_bytes: int | None,
        clock: Callable[[], float],
    ) -> None:
        """``rotate_bytes``: rotate once the file has grown to this size (None: never)."""
        self._path = path
        self._fsync = fsync
        self._rotate_bytes = rotate_bytes
        self._clock = clock
        self._fd: int | None = None
        self._sync_directory_pending = False
        # (device, inode, size) of the file after our last batch, and the head
        # then: if nothing changed, the chain resumes without reading the file.
        self._cache: tuple[tuple[int, int, int], int, str] | None = None
        self._stamp_second: int | None = None
        self._stamp_prefix = ""

    def close(self) -> None:
        """Close the file (the next batch opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(
        self, bodies: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any] | InfrastructureError]:
        """Chain and durably write ``bodies``; each record as written, or why it was not.

        Raises :class:`~orchestrator.errors.InfrastructureError` (code
        ``audit``) when the batch could not be written; then none of it was.
        """
        try:
            fd, held = self._locked()
        except OSError as exc:
            self.close()
            raise audit_failure(f"cannot open {self._path}: {exc}") from exc
        try:
            return self._commit(fd, held, bodies)
        except OSError as exc:
            self._cache = None
            self.close()  # also releases the flock
            raise audit_failure(f"cannot write {self._path}: {exc}") from exc
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _locked(self) -> tuple[int, os.stat_result]:
        """The current file's descriptor, exclusively locked, and its ``fstat`` under the lock."""
        for _ in range(_REOPEN_ATTEMPTS):
            if self._fd is None:
                self._fd = _open(self._path)
                self._sync_directory_pending = os.fstat(self._fd).st_size == 0
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            held = os.fstat(self._fd)
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) == (
                held.st_dev,
                held.st_ino,
            ):
                return self._fd, held
            # Another process rotated (or someone removed) the file while we
            # held it open: what we locked is no longer the log's current file.
            self.close()
        raise OSError(f"{self._path} keeps being replaced while we try to lock it")

    def _commit(
        self, fd: int, held: os.stat_result, bodies: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any] | InfrastructureError]:
        seq, prev, start = self._head(fd, held)
        stamp = self._timestamp()
        results: list[dict[str, Any] | InfrastructureError] = []
        lines: list[bytes] = []
        for body in bodies:
            written: dict[str, Any] = {"seq": seq, "ts": stamp, "prev": prev, **body}
            try:
                line, digest = encode_record(written)
            except (TypeError, ValueError) as exc:
                results.append(audit_failure(f"cannot encode an audit record: {exc}"))
                continue
            written["hash"] = digest
            results.append(written)
            lines.append(line + b"\n")
            seq, prev = seq + 1, digest
        if not lines:
            return results
        data = b"".join(lines)
        try:
            _write_all(fd, data)
            if self._fsync:
                os.fsync(fd)
        except OSError:
            # All or nothing: the callers are told this batch failed, so none
            # of it may stay (best effort; we still hold the lock).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        if self._fsync and self._sync_directory_pending:
            self._sync_directory()
        self._sync_directory_pending = False
        end = start + len(data)
        # The lock is still ours, so the file is the one fstat-ed under it and
        # its size is what we wrote past ``start``: no second fstat (each
        # system call is a few µs on this VM, and a batch costs four now).
        self._cache = ((held.st_dev, held.st_ino, end), seq - 1, prev)
        if self._rotate_bytes is not None and end >= self._rotate_bytes:
            self._rotate_after(fd, last_seq=seq - 1, last_hash=prev)
        return results

    def _head(self, fd: int, stat: os.stat_result) -> tuple[int, str, int]:
        """The next seq, the hash to chain to, and the file's size (after a torn line is cut).

        ``stat`` is the file's ``fstat`` taken under the lock.
        """
        end = stat.st_size
        if self._cache is not None and self._cache[0] == (stat.st_dev, stat.st_ino, end):
            return self._cache[1] + 1, self._cache[2], end
        if end and os.pread(fd, 1, end - 1) != b"\n":
            end = _previous_newline(fd, end) + 1
            _log.warning("audit log %s: cutting off a torn last line at byte %d", self._path, end)
            os.ftruncate(fd, end)
        if end == 0:
            seq, digest = self._head_of_archives()
            return seq, digest, 0
        try:
            last_seq, digest = _parse(_last_line(fd, end))
        except ValueError as exc:
            raise audit_failure(
                f"{self._path}: the last line is not an audit record ({exc}); "
                "run `stockade audit verify` and keep the file for investigation"
            ) from exc
        return last_seq + 1, digest, end

    def _head_of_archives(self) -> tuple[int, str]:
        """Where an empty current file resumes: after the newest rotated file, or at the start."""
        rotated = archives(self._path)
        if not rotated:
            return 0, GENESIS
        newest = rotated[-1]
        fd = os.open(newest, os.O_RDONLY | os.O_CLOEXEC)
        try:
            end = os.fstat(fd).st_size
            last = _last_line(fd, end) if end and os.pread(fd, 1, end - 1) == b"\n" else b""
            seq, digest = _parse(last)
        except ValueError as exc:
            raise audit_failure(
                f"{newest}: the rotated file does not end with an audit record ({exc}); "
                "run `stockade audit verify` and keep the files for investigation"
            ) from exc
        finally:
            os.close(fd)
        return seq + 1, digest

    def _rotate_after(self, fd: int, *, last_seq: int, last_hash: str) -> None:
        """Rename the full current file out of the way and start an empty one.

        Runs after the batch is durable, so a failure here loses nothing: it is
        logged, and the next batch tries again.
        """
        try:
            first_seq = _parse(_first_line(fd))[0]
        except ValueError:
            # A damaged first line (verify will name it): name the file by its
            # last record instead, which keeps the order of the names.
            first_seq = last_seq
        target = archive_path(self._path, first_seq)
        try:
            if target.exists():
                _log.warning("audit log %s: not rotating, %s already exists", self._path, target)
                return
            os.rename(self._path, target)
            fresh = _open(self._path)
        except OSError as exc:
            _log.warning("audit log %s: rotation failed: %s", self._path, exc)
            return
        os.close(fd)  # releases the old file's lock; it is complete and no longer current
        self._fd = fresh
        self._sync_directory_pending = True
        stat = os.fstat(fresh)
        # Another process may already have written to the new file (it only
        # needed our rename); then the cache does not match and the head is read.
        self._cache = ((stat.st_dev, stat.st_ino, 0), last_seq, last_hash)
        fcntl.flock(fresh, fcntl.LOCK_EX)  # so the caller's unlock pairs with a lock
        if self._fsync:
            self._sync_directory()
            self._sync_directory_pending = False
        _log.info("audit log %s: rotated to %s", self._path, target)

    def _timestamp(self) -> str:
        # The date and time to the second are formatted once per second, the
        # microseconds appended: 0.8 against 3.2 µs per batch (datetime's
        # isoformat). Rounded as datetime.fromtimestamp rounds (the fraction,
        # half to even), so the text is the same.
        fraction, whole = math.modf(self._clock())
        second, micros = int(whole), round(fraction * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        elif micros < 0:
            second, micros = second - 1, micros + 1_000_000
        if second != self._stamp_second:
            moment = datetime.fromtimestamp(second, tz=UTC)
            self._stamp_prefix = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._stamp_second = second
        return f"{self._stamp_prefix}.{micros:06d}Z"

    def _sync_directory(self) -> None:
        fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

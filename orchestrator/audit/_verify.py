"""Reading the audit log: checking its chain, and following it.

Both read the whole log: the files rotated out of it, oldest first, then the
current file (see :mod:`orchestrator.audit._files`), as one chain.

Besides tampering, :func:`verify` reports intents without outcomes: ``intent``
records (written before a call's sandbox runs anything) that no later ``call``
record names. They are not damage to the log: the process writing it died
mid-call, or could not write the outcome, so the call may have run with its
result unrecorded (or it is still running, for a live log).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.audit._chain import GENESIS, encode_record, parse_line
from orchestrator.audit._files import archives, open_chain
from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["OpenIntent", "VerifyReport", "tail", "verify"]

_INTENT = "intent"
_CALL = "call"
_BLOCK = 1 << 20
"""Bytes read at a time when searching the log for a run's lines."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenIntent:
    """An intent record no outcome followed: the call may have run, its result is unknown."""

    seq: int
    """The intent's seq."""
    ts: str
    """When it was written."""
    file: Path
    """The file holding it."""
    line: int
    """Its line in that file (1-based)."""
    call_id: str | None
    """The call."""
    run_id: str | None
    """The run."""
    tool: str | None
    """The tool about to run."""
    attempt: int | None
    """Which attempt of the call."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "file": str(self.file),
            "line": self.line,
            "call_id": self.call_id,
            "run_id": self.run_id,
            "tool": self.tool,
            "attempt": self.attempt,
        }


class _Intents:
    """Intents seen so far that no outcome has named yet."""

    def __init__(self) -> None:
        self._open: dict[int, OpenIntent] = {}
        self._by_call: dict[str, list[int]] = {}

    def see(self, record: dict[str, Any], file: Path, line: int) -> None:
        event = record.get("event")
        if event == _INTENT:
            intent = OpenIntent(
                seq=record["seq"],
                ts=str(record.get("ts", "")),
                file=file,
                line=line,
                call_id=record.get("call_id"),
                run_id=record.get("run_id"),
                tool=record.get("tool"),
                attempt=record.get("attempt"),
            )
            self._open[intent.seq] = intent
            if isinstance(intent.call_id, str):
                self._by_call.setdefault(intent.call_id, []).append(intent.seq)
        elif event == _CALL:
            # Fields are read as a chain anyone can rehash may hold them: any JSON.
            named = record.get("intents")
            named = named if isinstance(named, list) else []
            # An outcome closes the intents it names, and any other of its call's (an
            # attempt cancelled while its intent was being written is named by none).
            call_id = record.get("call_id")
            if isinstance(call_id, str):
                named = [*named, *self._by_call.pop(call_id, [])]
            for seq in named:
                if isinstance(seq, int):
                    self._open.pop(seq, None)

    def remaining(self) -> tuple[OpenIntent, ...]:
        return tuple(sorted(self._open.values(), key=lambda intent: intent.seq))


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """The outcome of checking a log's chain."""

    ok: bool
    """Every line is an intact record, chained to the one before."""
    records: int
    """Records that checked out before the first problem (all of them when ok)."""
    line: int | None = None
    """The first bad line (1-based, within ``file``); None when ok."""
    file: Path | None = None
    """The file of the first bad line; None when ok."""
    files: tuple[Path, ...] = field(default=())
    """The files checked, in chain order (rotated files first)."""
    problem: str = ""
    """What is wrong with that line."""
    last_hash: str = GENESIS
    """Hash of the last good record. A chain cannot show that records were cut
    off its end: compare this (or ``records``) with a copy kept elsewhere."""
    open_intents: tuple[OpenIntent, ...] = ()
    """Intents no outcome followed (up to the first bad line): calls whose process died or
    could not write the outcome, or that are still running. Not tampering: ``ok`` ignores
    them."""


def _intact(raw: bytes) -> dict[str, Any] | str:
    """The record on this line, or what is wrong with the line on its own."""
    if not raw.endswith(b"\n"):
        return "incomplete last line (a write was cut short)"
    try:
        record = parse_line(raw)
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


def _check(
    files: Iterable[tuple[Path, BinaryIO]], intents: _Intents
) -> tuple[int, str, tuple[Path, int, str] | None]:
    """Records checked, the last good hash, and (file, line, problem) at the first bad line."""
    previous, count = GENESIS, 0
    for path, handle in files:
        for number, raw in enumerate(handle, start=1):
            record = _intact(raw)
            problem = record if isinstance(record, str) else _problem(record, count, previous)
            if problem is not None:
                return count, previous, (path, number, problem)
            assert isinstance(record, dict)
            intents.see(record, path, number)
            previous, count = record["hash"], count + 1
    return count, previous, None


def verify(path: str | Path) -> VerifyReport:
    """Walk the chain through every file of the log; report the first line that was edited,
    removed, inserted or moved, and the intents no outcome followed.

    Raises :class:`FileNotFoundError` when there is no log at ``path``.
    """
    path = Path(path)
    rotated, current = open_chain(path)
    if current is None and not rotated:
        raise FileNotFoundError(f"no audit log at {path}")
    checked = (*rotated, path) if current is not None else tuple(rotated)

    def opened() -> Iterator[tuple[Path, BinaryIO]]:
        for file in rotated:
            with file.open("rb") as handle:
                yield file, handle
        if current is not None:
            yield path, current

    intents = _Intents()
    try:
        count, previous, bad = _check(opened(), intents)
    finally:
        if current is not None:
            current.close()
    if bad is None:
        return VerifyReport(
            ok=True,
            records=count,
            last_hash=previous,
            files=checked,
            open_intents=intents.remaining(),
        )
    file, line, problem = bad
    return VerifyReport(
        ok=False,
        records=count,
        line=line,
        file=file,
        problem=problem,
        last_hash=previous,
        files=checked,
        open_intents=intents.remaining(),
    )


def _unreadable(handle: BinaryIO, offset: int) -> InfrastructureError:
    """The error of a line at byte ``offset`` that holds no record, naming its file and line.

    The line is counted only now, so reading a sound log never counts lines.
    """
    fd, position, newlines = handle.fileno(), 0, 0
    while position < offset:
        chunk = os.pread(fd, min(_BLOCK, offset - position), position)
        if not chunk:
            break
        newlines += chunk.count(b"\n")
        position += len(chunk)
    return InfrastructureError(
        f"{handle.name}:{newlines + 1}: not an audit record; `stockade audit verify` checks "
        "the whole chain and names what changed",
        code=ErrorCode.AUDIT,
        op="audit.read",
        retryable=False,
    )


def _record(raw: bytes, handle: BinaryIO, offset: int) -> dict[str, Any]:
    """The record of a complete line that starts at byte ``offset`` of ``handle``'s file."""
    try:
        record = parse_line(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise _unreadable(handle, offset)
    return record


def _complete_records(
    handle: BinaryIO, containing: bytes | None = None
) -> Iterator[dict[str, Any]]:
    """The records of the complete lines from the handle's position on.

    A line still being written is left unread, to be read whole later. With
    ``containing``, only the lines that hold those bytes. A complete line that
    holds no record raises :class:`~orchestrator.errors.InfrastructureError`
    (code ``audit``) naming its file and line.
    """
    if containing is not None:
        yield from _records_containing(handle, containing)
        return
    while True:
        position = handle.tell()
        raw = handle.readline()
        if not raw:
            return
        if not raw.endswith(b"\n"):
            handle.seek(position)
            return
        yield _record(raw, handle, position)


def _records_containing(handle: BinaryIO, containing: bytes) -> Iterator[dict[str, Any]]:
    """The records of the complete lines holding ``containing``, found block by block.

    The bytes are searched for a megabyte at a time and only the lines
    around a hit are cut out and parsed; the rest is never split into lines.
    """
    pending = b""
    while True:
        offset = handle.tell() - len(pending)  # of the block in the file
        chunk = handle.read(_BLOCK)
        if not chunk:
            break
        block = pending + chunk
        end = block.rfind(b"\n") + 1  # whole lines only; the rest waits for the next block
        pending = block[end:]
        hit = block.find(containing, 0, end)
        while hit >= 0:
            start = block.rfind(b"\n", 0, hit) + 1
            stop = block.index(b"\n", hit) + 1
            yield _record(block[start:stop], handle, offset + start)
            hit = block.find(containing, stop, end)
    if pending:  # a line still being written: read whole later
        handle.seek(-len(pending), os.SEEK_CUR)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _held(handle: BinaryIO | None) -> tuple[int, int] | None:
    if handle is None:
        return None
    stat = os.fstat(handle.fileno())
    return stat.st_dev, stat.st_ino


class _Reader:
    """Records from files and handles, in order, remembering the last seq yielded."""

    def __init__(self, containing: bytes | None = None) -> None:
        self.last_seq = -1
        self._containing = containing

    def handle(self, handle: BinaryIO) -> Iterator[dict[str, Any]]:
        for record in _complete_records(handle, self._containing):
            seq = record.get("seq")
            if isinstance(seq, int):
                self.last_seq = seq
            yield record

    def file(self, path: Path) -> Iterator[dict[str, Any]]:
        with path.open("rb") as handle:
            yield from self.handle(handle)

    def rotated_since(self, path: Path, current: BinaryIO) -> Iterator[dict[str, Any]]:
        """Files rotated out after the last record read, before ``current``."""
        for file in archives(path):
            if _identity(file) == _held(current):
                continue  # ``current`` itself, rotated out already: the caller reads it
            if int(file.name.rsplit(".", 1)[1]) > self.last_seq:
                yield from self.file(file)


def tail(
    path: str | Path,
    *,
    follow: bool = False,
    poll_s: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    containing: bytes | None = None,
) -> Iterator[dict[str, Any]]:
    """The log's records in order, rotated files first; with ``follow``, keep yielding new ones.

    A line still being written is held back until it is complete. Following
    polls every ``poll_s`` seconds, goes on into the new file when the current
    one is rotated out, and ends when ``stop()`` returns true.

    ``containing`` (not with ``follow``): only the records whose line holds
    these bytes; the others are skipped without being parsed, which is most
    of a read's time (one run's records of a 66 MB log: 0.7-1.0 s parsing
    every line, 0.07-0.08 s so; ``benchmarks/timeline_bench.py``).
    """
    if follow and containing is not None:
        # Following finds its place after a rotation by the last seq it read,
        # which a skipped line would not update.
        raise ValueError("tail: containing cannot be combined with follow")
    path = Path(path)
    rotated, current = open_chain(path)
    reader = _Reader(containing)
    try:
        for file in rotated:
            yield from reader.file(file)
        while True:
            if current is not None:
                yield from reader.handle(current)
            if not follow or stop():
                return
            now = _identity(path)
            if now is None or now == _held(current):
                time.sleep(poll_s)
                continue
            # Rotated: finish the old file (nobody writes to it any more), then
            # any file rotated out after it, then go on in the new current file.
            if current is not None:
                yield from reader.handle(current)
                current.close()
            current = path.open("rb")
            yield from reader.rotated_since(path, current)
    finally:
        if current is not None:
            current.close()

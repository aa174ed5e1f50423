"""A run's calls as the audit log tells them, read again only when that can show something new.

:func:`~orchestrator.audit.timeline.call_timeline` reads the whole log (its
rotated files too) for one run's records: ~0.08 s for a 66 MB log of 100 000
records on the 2-core VM, parsing only the lines that name the run
(``benchmarks/timeline_bench.py``; 0.7-1.0 s when every line was parsed). A page of a run
under way asks once a second, so the entries are kept per run and read
again only when the log has changed since (its current file's inode, size or
time) and either the run's own events have (a call began, waited, ended) or
the entries are older than :data:`MAX_AGE_S`. A record that lands between
two events shows at most that much later; the page of an ended run reads
the log once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.audit.timeline import CallEntry, call_timeline

__all__ = ["MAX_AGE_S", "CallReads"]

MAX_AGE_S = 5.0
"""Longest a run's entries are kept while the log changes and its events do not."""
_KEPT = 256

_LogIdentity = tuple[int, int, int]


def _identity(path: Path) -> _LogIdentity | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


@dataclass(frozen=True, kw_only=True)
class _Read:
    log: _LogIdentity
    events: int
    at: float
    entries: list[CallEntry]


def _read(path: Path, run_id: str) -> tuple[_LogIdentity | None, list[CallEntry]]:
    # The identity first: a record appended during the read makes the next one read again.
    log = _identity(path)
    return log, ([] if log is None else call_timeline(path, run_id=run_id))


class CallReads:
    """The audit log's entries of the calls of recently shown runs."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reads: dict[tuple[Path, str], _Read] = {}

    async def calls(self, path: Path, run_id: str, events: int) -> list[CallEntry]:
        """The entries of ``run_id``'s calls in the log at ``path`` (``events``: how many)."""
        key = (path, run_id)
        kept = self._reads.get(key)
        now = self._clock()
        if kept is not None:
            log = await asyncio.to_thread(_identity, path)
            fresh = kept.events == events and now - kept.at < MAX_AGE_S
            if log == kept.log or fresh:
                return kept.entries
        log, entries = await asyncio.to_thread(_read, path, run_id)
        if log is None:
            return []
        self._reads.pop(key, None)
        while len(self._reads) >= _KEPT:
            del self._reads[next(iter(self._reads))]  # the oldest read first
        self._reads[key] = _Read(log=log, events=events, at=now, entries=entries)
        return entries

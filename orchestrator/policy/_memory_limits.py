"""The default limit store: state in this process's memory, for this process only.

Exactly the behaviour Stockade had before stores existed: one lock, one float
per GCRA state, a monotonic clock. Several processes each get their own full
limits; use :class:`~orchestrator.policy.SqliteLimitStore` to share them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from orchestrator.policy._limitstore import (
    BudgetUsage,
    LimitStore,
    RateCell,
    RateVerdict,
    gcra,
    has_room,
)

__all__ = ["InMemoryLimitStore"]

# States whose TAT has passed carry nothing (a fresh key behaves the same), so
# they are dropped now and then: one state per run ever seen would otherwise
# grow forever.
_PRUNE_EVERY = 4096


class InMemoryLimitStore(LimitStore):
    """Limits and budgets in memory; thread-safe, never waits on I/O."""

    may_wait = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` returns seconds that never go backwards; inject a fake one in tests."""
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._budgets: dict[str, BudgetUsage] = {}
        self._lock = threading.Lock()
        self._steps = 0

    def acquire(self, cells: Sequence[RateCell]) -> RateVerdict:
        """Check and charge every cell in one step under the lock."""
        with self._lock:
            now = self._clock()
            verdict, writes = gcra(cells, [self._tats.get(cell.key) for cell in cells], now)
            for index, tat in writes:
                self._tats[cells[index].key] = tat
            if not verdict.allowed:
                return verdict
            self._steps += 1
            if self._steps % _PRUNE_EVERY == 0:
                self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
            return verdict

    def try_acquire(self, cells: Sequence[RateCell]) -> RateVerdict:
        """The same as :meth:`acquire`: memory never makes a caller wait for long."""
        return self.acquire(cells)

    def count_call(
        self, key: str, *, max_calls: int | None, max_tokens: int | None
    ) -> tuple[bool, BudgetUsage]:
        """Count one more call of ``key`` if both maxima have room."""
        with self._lock:
            usage = self._budgets.get(key, BudgetUsage())
            if not has_room(usage, max_calls=max_calls, max_tokens=max_tokens):
                return False, usage
            usage = BudgetUsage(calls=usage.calls + 1, tokens=usage.tokens)
            self._budgets[key] = usage
            return True, usage

    def add_tokens(self, key: str, tokens: int) -> None:
        """Add ``tokens`` to ``key``."""
        with self._lock:
            usage = self._budgets.get(key, BudgetUsage())
            self._budgets[key] = BudgetUsage(calls=usage.calls, tokens=usage.tokens + tokens)

    def usage(self, key: str) -> BudgetUsage:
        """What ``key`` has used."""
        with self._lock:
            return self._budgets.get(key, BudgetUsage())

    def forget(self, key: str) -> None:
        """Drop ``key``'s budget."""
        with self._lock:
            self._budgets.pop(key, None)

    def tracked_keys(self) -> int:
        """How many GCRA states are held; for tests and metrics."""
        with self._lock:
            return len(self._tats)

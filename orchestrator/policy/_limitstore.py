"""Where rate-limit and model-budget state lives: the interface every limit store implements.

A store holds two kinds of state, each changed in one atomic step:

- GCRA states (see :mod:`orchestrator.policy._ratelimit`): :meth:`LimitStore.acquire`
  is given the cells a call must fit, checks them all against the store's clock
  and consumes capacity in every one only when all allow. Whoever else shares
  the store (threads, processes, hosts) sees either all of the update or none.
- Model budgets: calls and tokens per run, counted by :meth:`LimitStore.count_call`
  (check both limits, then count) and :meth:`LimitStore.add_tokens`.

The store owns the clock, because what "now" means depends on who shares the
state: one process may use :func:`time.monotonic`, processes on one host need
the wall clock, and hosts sharing a networked store should use the server's.

A store decides; it knows nothing of policies, tools or runs. The GCRA
arithmetic lives here once (:func:`gcra`) so every backend computes exactly the
same answers.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BudgetUsage", "LimitStore", "RateCell", "RateVerdict", "gcra", "has_room"]

# Float noise must not turn an exactly-on-time call into a refusal.
_EPSILON = 1e-9


@dataclass(frozen=True, kw_only=True, slots=True)
class RateCell:
    """One GCRA state a call must fit: which state, and its limit's spacing."""

    key: str
    """Names the state (a limit and its scope key); opaque to the store."""
    interval_s: float
    """The emission interval ``T``: seconds between calls at the sustained rate."""
    tolerance_s: float
    """``(burst - 1) * T``: how far past now the state may run before calls wait."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RateVerdict:
    """The outcome of one :meth:`LimitStore.acquire` step."""

    allowed: bool
    """Every cell had room, and each has been charged one call."""
    retry_after_s: float = 0.0
    """Seconds until the refusing cell would have room; 0 when allowed."""
    refused: int | None = None
    """Index (in the cells given) of the cell with the longest wait; None when allowed."""
    reason: str | None = None
    """Why the store refused without a cell deciding (it could not reach its state, and
    fails closed), naming the store; None otherwise."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetUsage:
    """What one budget (one run's model side) has used."""

    calls: int = 0
    """Model calls counted."""
    tokens: int = 0
    """Tokens added."""


_ALLOWED = RateVerdict(allowed=True)


def gcra(
    cells: Sequence[RateCell], tats: Sequence[float | None], now: float
) -> tuple[RateVerdict, list[tuple[int, float]]]:
    """Decide one step from the stored TATs (None: no state yet) at ``now``.

    Returns the verdict and the TATs to store, as (index in ``cells``, TAT):
    when allowed, every cell's, each charged one call; when refused, nothing
    is charged. A stored TAT is never legitimately more than
    ``tolerance + interval`` ahead of the clock; one that is means the clock
    stepped back (a wall clock set back, a reboot) or the limit was
    tightened. It is clamped to that bound, and the clamp is stored even when
    the call is refused, so such a jump costs at most one interval of waiting
    instead of the size of the jump.
    """
    charged: list[tuple[int, float]] = []
    clamped: list[tuple[int, float]] = []
    wait = 0.0
    refused: int | None = None
    for index, (cell, stored) in enumerate(zip(cells, tats, strict=True)):
        tat = now if stored is None or stored < now else stored
        ceiling = now + cell.tolerance_s + cell.interval_s
        if tat > ceiling:
            tat = ceiling
            clamped.append((index, tat))
        late = tat - cell.tolerance_s - now
        if late > _EPSILON:
            if late > wait:
                wait, refused = late, index
        else:
            charged.append((index, tat + cell.interval_s))
    if refused is not None:
        return RateVerdict(allowed=False, retry_after_s=wait, refused=refused), clamped
    return _ALLOWED, charged


def has_room(usage: BudgetUsage, *, max_calls: int | None, max_tokens: int | None) -> bool:
    """Whether a budget that has used ``usage`` may start one more call (None: no limit)."""
    return (max_calls is None or usage.calls < max_calls) and (
        max_tokens is None or usage.tokens < max_tokens
    )


class LimitStore(ABC):
    """Rate-limit and budget state, each change one atomic step; thread-safe.

    Methods may wait: for a lock another process holds, or for the network.
    Code on an event loop first tries :meth:`try_acquire`, which never waits,
    and awaits :meth:`acquire_async` only when that declines (a thread by
    default; a networked store answers on the event loop itself). The budget
    methods are called once per model call, not per tool call, and have no
    non-waiting form: from async code, call them in a thread on a store
    whose :attr:`may_wait` is true.
    """

    may_wait: bool = True
    """Whether the methods can wait on I/O or other processes (False: pure memory)."""

    @abstractmethod
    def acquire(self, cells: Sequence[RateCell]) -> RateVerdict:
        """Check every cell at the store's now; charge all of them only if all allow."""

    def try_acquire(self, cells: Sequence[RateCell]) -> RateVerdict | None:
        """Like :meth:`acquire` if that can finish without waiting; None when it cannot.

        The default always declines (a networked store always waits for a reply).
        """
        return None

    async def acquire_async(self, cells: Sequence[RateCell]) -> RateVerdict:
        """:meth:`acquire` for code on an event loop, which it never blocks.

        The default answers inline when :meth:`try_acquire` can, else runs
        :meth:`acquire` in a thread; a store that can wait on the loop itself
        (Redis, through ``redis.asyncio``) overrides it and saves the hop.
        """
        verdict = self.try_acquire(cells)
        if verdict is not None:
            return verdict
        return await asyncio.to_thread(self.acquire, cells)

    @abstractmethod
    def count_call(
        self, key: str, *, max_calls: int | None, max_tokens: int | None
    ) -> tuple[bool, BudgetUsage]:
        """Count one more call of budget ``key`` if it has used fewer than both maxima.

        None means no limit. Returns whether the call was counted, and the
        usage after the step.
        """

    @abstractmethod
    def add_tokens(self, key: str, tokens: int) -> None:
        """Add ``tokens`` (never negative) to budget ``key``."""

    @abstractmethod
    def usage(self, key: str) -> BudgetUsage:
        """What budget ``key`` has used (nothing, if it was never charged)."""

    @abstractmethod
    def forget(self, key: str) -> None:
        """Drop budget ``key``: its run has ended, and the same key would start afresh."""

    def close(self) -> None:  # noqa: B027 -- most stores hold nothing to release
        """Release what the store holds (files, connections); it is not used afterwards."""

    async def aclose(self) -> None:
        """:meth:`close` from an event loop, also closing what the store opened on that loop."""
        self.close()

"""Rate limits with GCRA (the generic cell rate algorithm), one state per limit and scope key.

For a limit of ``rate`` calls per ``per_s`` seconds with ``burst``, calls are
spaced by the emission interval ``T = per_s / rate``. Each (limit, scope key)
keeps a theoretical arrival time ``TAT``; a call at ``now`` is allowed when
``TAT - now <= (burst - 1) * T`` and then moves ``TAT`` to
``max(TAT, now) + T``. One float per key, no timers, exact under an injected
clock.

A call is checked against every limit that counts it and consumes capacity
only when all of them allow it, so a refused call costs nothing anywhere.
The scope key of a ``run`` limit is the run id, of a ``principal`` limit the
principal; calls without one share the key of "none".

The states live in a :class:`~orchestrator.policy.LimitStore`: by default in
this process's memory; in a :class:`~orchestrator.policy.SqliteLimitStore`,
every process on the host that opens the same file shares them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.errors import UsageError
from orchestrator.policy._limitstore import LimitStore, RateCell, RateVerdict
from orchestrator.policy._memory_limits import InMemoryLimitStore
from orchestrator.policy._model import RateLimit

__all__ = ["RateLimitAnswer", "RateLimiter"]

# Which limits count a tool is cached per tool name (a regex match per limit
# otherwise); names come from the registry, but the cache stays bounded.
_TOOL_CACHE_SIZE = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimitAnswer:
    """Whether a call may proceed now, and if not, when to try again."""

    allowed: bool
    """The call may proceed (and has been counted)."""
    retry_after_s: float = 0.0
    """Seconds until the call would be allowed; 0 when allowed."""
    limit: str | None = None
    """The limit that refused (the one with the longest wait), or the store that could not
    be reached; required on a refusal; None when allowed."""
    reason: str | None = None
    """Why no limit could decide, when the store could not be reached and fails closed."""

    def __post_init__(self) -> None:
        # The refusing limit is a metric label (stockade_rate_limited_total{limit}) and
        # what the model is told: a refusal naming none would be a series limit="".
        if not self.allowed and not self.limit:
            raise ValueError("a refusal names the limit that refused (or the store)")


_ALLOWED = RateLimitAnswer(allowed=True)


@dataclass(frozen=True, slots=True)
class _Limit:
    rule: RateLimit
    name: str
    scope: str
    prefix: str
    interval_s: float
    tolerance_s: float


class RateLimiter:
    """The rate limits of one policy, kept in a :class:`LimitStore`; thread-safe."""

    def __init__(
        self,
        limits: Sequence[RateLimit],
        *,
        store: LimitStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Count calls against ``limits`` in ``store`` (default: this process's memory).

        ``clock`` (monotonic seconds; inject a fake one in tests) is for the
        default store only: a store keeps its own clock, because what "now"
        means depends on who shares it.
        """
        if store is not None and clock is not None:
            raise UsageError("give the clock to the store: a store keeps its own clock")
        self._store = (
            store if store is not None else InMemoryLimitStore(clock=clock or time.monotonic)
        )
        self._limits = tuple(
            _Limit(
                rule=limit,
                name=limit.name,
                scope=limit.scope,
                # The scope and the name's length make keys of different limits
                # distinct whatever characters names and ids contain.
                prefix=f"{limit.scope}:{len(limit.name)}:{limit.name}",
                interval_s=limit.interval_s,
                tolerance_s=(limit.burst - 1) * limit.interval_s,
            )
            for limit in limits
        )
        self._by_tool: dict[str, tuple[_Limit, ...]] = {}

    @property
    def store(self) -> LimitStore:
        """Where the limits' states live (model budgets may share it)."""
        return self._store

    def check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer:
        """Allow and count the call against every matching limit, or refuse it with a wait.

        May wait on a shared store; see :meth:`try_check` for code on an event loop.
        """
        limits, cells = self._cells(tool_name, run_id, principal)
        if not cells:
            return _ALLOWED
        return _answer(limits, self._store.acquire(cells))

    def try_check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer | None:
        """:meth:`check` if the store can answer without waiting; None when it cannot.

        On None, await :meth:`check_async`: nothing has been counted yet.
        """
        limits, cells = self._cells(tool_name, run_id, principal)
        if not cells:
            return _ALLOWED
        verdict = self._store.try_acquire(cells)
        return None if verdict is None else _answer(limits, verdict)

    async def check_async(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer:
        """:meth:`check` without blocking the event loop: the store's
        :meth:`~orchestrator.policy.LimitStore.acquire_async` (Redis answers on the
        loop, SQLite inline when it can and in a thread when it must wait)."""
        limits, cells = self._cells(tool_name, run_id, principal)
        if not cells:
            return _ALLOWED
        return _answer(limits, await self._store.acquire_async(cells))

    def _cells(
        self, tool_name: str, run_id: str | None, principal: str | None
    ) -> tuple[tuple[_Limit, ...], list[RateCell]]:
        limits = self._by_tool.get(tool_name)
        if limits is None:
            limits = tuple(limit for limit in self._limits if limit.rule.counts(tool_name))
            if len(self._by_tool) >= _TOOL_CACHE_SIZE:
                self._by_tool.clear()
            self._by_tool[tool_name] = limits
        cells = [
            RateCell(
                key=_key(limit, run_id, principal),
                interval_s=limit.interval_s,
                tolerance_s=limit.tolerance_s,
            )
            for limit in limits
        ]
        return limits, cells


def _key(limit: _Limit, run_id: str | None, principal: str | None) -> str:
    if limit.scope == "run":
        scope_key = run_id
    elif limit.scope == "principal":
        scope_key = principal
    else:
        scope_key = None
    return f"{limit.prefix}-" if scope_key is None else f"{limit.prefix}={scope_key}"


def _answer(limits: Sequence[_Limit], verdict: RateVerdict) -> RateLimitAnswer:
    if verdict.allowed:
        return _ALLOWED
    if verdict.refused is None:
        # No cell decided: the store could not be reached and fails closed. Its
        # reason (one per store, so a bounded metric label) stands for the limit.
        return RateLimitAnswer(
            allowed=False,
            retry_after_s=verdict.retry_after_s,
            limit=verdict.reason or "store",
            reason=verdict.reason or "the limit store could not be reached",
        )
    return RateLimitAnswer(
        allowed=False, retry_after_s=verdict.retry_after_s, limit=limits[verdict.refused].name
    )

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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.policy._model import RateLimit

__all__ = ["RateLimitAnswer", "RateLimiter"]

# Float noise must not turn an exactly-on-time call into a refusal.
_EPSILON = 1e-9
# Keys whose TAT has passed carry no state (a fresh key behaves the same), so they
# are dropped now and then: one state per run ever seen would otherwise grow forever.
_PRUNE_EVERY = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimitAnswer:
    """Whether a call may proceed now, and if not, when to try again."""

    allowed: bool
    """The call may proceed (and has been counted)."""
    retry_after_s: float = 0.0
    """Seconds until the call would be allowed; 0 when allowed."""
    limit: str | None = None
    """The limit that refused (the one with the longest wait); None when allowed."""


class RateLimiter:
    """The rate limits of one policy, in memory, for one process; thread-safe."""

    def __init__(
        self, limits: Sequence[RateLimit], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``clock`` returns monotonic seconds; inject a fake one in tests."""
        self._limits = tuple(limits)
        self._clock = clock
        self._tat: dict[tuple[int, str | None], float] = {}
        self._lock = threading.Lock()
        self._checks = 0

    def check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer:
        """Allow and count the call against every matching limit, or refuse it with a wait."""
        with self._lock:
            now = self._clock()
            updates: list[tuple[tuple[int, str | None], float]] = []
            refusal: RateLimitAnswer | None = None
            for index, limit in enumerate(self._limits):
                if not limit.counts(tool_name):
                    continue
                key = (index, _scope_key(limit, run_id, principal))
                interval = limit.interval_s
                tolerance = (limit.burst - 1) * interval
                tat = max(self._tat.get(key, now), now)
                wait = tat - tolerance - now
                if wait > _EPSILON:
                    if refusal is None or wait > refusal.retry_after_s:
                        refusal = RateLimitAnswer(
                            allowed=False, retry_after_s=wait, limit=limit.name
                        )
                else:
                    updates.append((key, tat + interval))
            if refusal is not None:
                return refusal
            self._tat.update(updates)
            self._checks += 1
            if self._checks % _PRUNE_EVERY == 0:
                self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
            return RateLimitAnswer(allowed=True)

    def tracked_keys(self) -> int:
        """How many (limit, scope) states are held; for tests and metrics."""
        with self._lock:
            return len(self._tat)


def _scope_key(limit: RateLimit, run_id: str | None, principal: str | None) -> str | None:
    if limit.scope == "run":
        return run_id
    if limit.scope == "principal":
        return principal
    return None

"""Rate limits with GCRA (the generic cell rate algorithm), one state per limit and scope key.

For a limit of ``rate`` calls per ``per_s`` seconds with ``burst``, calls are
spaced by the emission interval ``T = per_s / rate``; a call is allowed when
the theoretical arrival time (TAT) is at most ``(burst - 1) * T`` ahead of
now. A call is checked against every matching limit and consumes capacity
only when all of them allow it. The clock is injected, so tests are exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.policy._evaluate import glob_match
from orchestrator.policy._model import RateLimit

__all__ = ["RateLimitAnswer", "RateLimiter"]


@dataclass(frozen=True, kw_only=True)
class RateLimitAnswer:
    """Whether a call may proceed now, and if not, when."""

    allowed: bool
    retry_after_s: float = 0.0
    limit: str | None = None
    """The limit that refused (the one with the longest wait)."""


class RateLimiter:
    """All rate limits of one policy; thread-safe."""

    def __init__(
        self, limits: list[RateLimit], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._tat: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(limit: RateLimit, run_id: str | None, principal: str | None) -> str:
        if limit.scope == "run":
            return f"run:{run_id or ''}"
        if limit.scope == "principal":
            return f"principal:{principal or ''}"
        return "global"

    def check(
        self, tool: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer:
        """Allow and count the call, or refuse it with the time to wait."""
        with self._lock:
            now = self._clock()
            updates: dict[tuple[str, str], float] = {}
            refusal: RateLimitAnswer | None = None
            for limit in self._limits:
                if not glob_match(tool, limit.tools):
                    continue
                key = (limit.name, self._key(limit, run_id, principal))
                interval = limit.per_s / limit.rate
                tolerance = (limit.burst - 1) * interval
                tat = max(self._tat.get(key, now), now)
                if tat - now > tolerance + 1e-9:
                    wait = tat - tolerance - now
                    if refusal is None or wait > refusal.retry_after_s:
                        refusal = RateLimitAnswer(
                            allowed=False, retry_after_s=wait, limit=limit.name
                        )
                else:
                    updates[key] = tat + interval
            if refusal is not None:
                return refusal
            self._tat.update(updates)
            return RateLimitAnswer(allowed=True)

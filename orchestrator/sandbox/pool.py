"""A warm pool of single-use sandboxes.

The pool keeps ``size`` sandboxes started and ready; :meth:`WarmPool.acquire`
hands one out without waiting on a start while any is ready, and a background
task refills the pool. A sandbox leaves the pool exactly once: the caller owns
it and must destroy it. When the pool is empty the caller gets a fresh one.
Generic over the sandbox type so its logic is testable without an engine.

A caller may ask for the replacement to wait for the end of its call
(``acquire(defer_refill=True)``, then :meth:`WarmPool.refill`): starting a
container (the engine's work, then its tool host's imports, ~250 ms of CPU in
the tools image) on the same cores as the call slows the call down. It waits
only while another sandbox is still ready, and at most ``refill_delay_s``:
the next call is served warm all the same, and a pool taken empty refills at
once. Measured through the gateway (python.run, pool of 2, 15 interleaved
rounds, load ~4): stateless ``print(1)`` 27.0 → 19.7 ms p50, restoring and
saving a 1 MB namespace 60.3 → 43.1 ms.

A start is *waited for* when a caller already waits for a sandbox (the pool
ran dry: a burst, a batch): ``launch(True)``. The launcher may then prepare
less before the sandbox says ready — the tools image's host skips its
optional preloads (numpy and the state serialiser, ~100 ms of CPU), which
the waiting call would otherwise sit through whether it uses them or not; a
call that does use them imports them itself, no later than it would have
got a fully prepared sandbox. Refills nobody waits for prepare everything.
Measured on HumanEval (164 ``python.run`` calls, 4 at a time, pool of 4,
two cores): see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["WarmPool"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class _Ready(Generic[T]):
    item: T
    since: float


class WarmPool(Generic[T]):
    """Pre-started single-use sandboxes for one profile."""

    def __init__(
        self,
        *,
        name: str,
        launch: Callable[[bool], Awaitable[T]],
        destroy: Callable[[T], Awaitable[None]],
        size: int,
        max_starting: int = 2,
        max_idle_s: float = 600.0,
        refill_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``launch(waited_for)`` starts a sandbox (see the module docstring);
        ``refill_delay_s`` bounds how long ``acquire(defer_refill=True)`` delays a start."""
        self._name = name
        self._launch = launch
        self._destroy = destroy
        self._size = size
        self._max_starting = max(1, max_starting)
        self._max_idle_s = max_idle_s
        self._refill_delay_s = refill_delay_s
        self._clock = clock
        self._ready: deque[_Ready[T]] = deque()
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()
        self._refiller: asyncio.Task[None] | None = None
        self._failures = 0
        self._closed = False

    @property
    def name(self) -> str:
        """The pool's name (its profile's)."""
        return self._name

    @property
    def size(self) -> int:
        """Sandboxes the pool keeps ready."""
        return self._size

    @property
    def ready(self) -> int:
        """Sandboxes started and waiting."""
        return len(self._ready)

    @property
    def starting(self) -> int:
        """Sandboxes being started."""
        return self._starting

    def start(self) -> None:
        """Begin filling the pool in the background."""
        if self._refiller is None and self._size > 0:
            self._refiller = asyncio.create_task(self._refill(), name=f"pool-{self._name}")

    async def acquire(self, *, defer_refill: bool = False) -> tuple[T, bool]:
        """A sandbox for one call and whether it came warm from the pool.

        With ``defer_refill`` its replacement starts when the caller calls
        :meth:`refill` (its call is over) or after ``refill_delay_s``, as
        long as another sandbox is still ready; else at once.
        """
        if self._closed:
            raise InfrastructureError(
                f"pool {self._name} is closed",
                code=ErrorCode.CLOSED,
                op="pool.acquire",
                retryable=False,
            )
        self._expire_idle()
        if defer_refill and len(self._ready) > 1:
            # A spare stays ready for the next call: the start can wait for
            # this call's end instead of competing with it for the CPU.
            asyncio.get_running_loop().call_later(self._refill_delay_s, self._wake.set)
            return self._ready.popleft().item, True
        self._wake.set()
        if self._ready:
            return self._ready.popleft().item, True
        if len(self._waiters) < self._starting:
            # A start already under way finishes sooner than a new one would,
            # and a new one would only slow the engine down for everyone.
            handoff: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._waiters.append(handoff)
            try:
                return await handoff, True
            except InfrastructureError:
                pass  # that start failed: start one of our own
        return await self._launch(True), False

    def refill(self) -> None:
        """Start the replacements a deferred :meth:`acquire` held back (its call is over)."""
        self._wake.set()

    def discard_ready(self) -> None:
        """Destroy every ready sandbox (they outlived an engine event) and start anew."""
        while self._ready:
            self._track(self._destroy(self._ready.popleft().item))
        self._wake.set()

    async def wait_ready(self, count: int | None = None, *, timeout_s: float = 60.0) -> None:
        """Wait until ``count`` (default: the pool size) sandboxes are ready."""
        wanted = self._size if count is None else count
        async with asyncio.timeout(timeout_s):
            while len(self._ready) < wanted:
                self._arrived.clear()
                self._wake.set()
                await self._arrived.wait()

    async def _refill(self) -> None:
        while not self._closed:
            if self._failures:
                # The engine just refused a start: give it time before the next.
                await asyncio.sleep(min(30.0, 0.25 * 2 ** min(self._failures, 7)))
            self._expire_idle()
            missing = self._size + len(self._waiters) - len(self._ready) - self._starting
            room = self._max_starting - self._starting
            waited_for = any(not handoff.done() for handoff in self._waiters)
            for _ in range(max(0, min(missing, room))):
                # Counted here, uncounted by the start itself before it wakes
                # this loop: the count is never stale when the loop looks.
                self._starting += 1
                self._track(self._start_one(waited_for))
            self._wake.clear()
            # Wake up on demand, when a start finishes, or to expire idle ones.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(1.0, self._max_idle_s / 4)):
                    await self._wake.wait()

    async def _start_one(self, waited_for: bool) -> None:
        try:
            item = await self._launch(waited_for)
        except Exception as exc:  # any start failure means: back off, retry
            self._failures += 1
            _log.warning("pool %s: starting a sandbox failed: %s", self._name, exc)
            self._release_waiter(exc)
            self._wake.set()
            return
        finally:
            self._starting -= 1
        self._failures = 0
        if self._closed:
            await self._destroy(item)
            return
        while self._waiters:
            handoff = self._waiters.popleft()
            if not handoff.done():  # a cancelled caller no longer wants it
                handoff.set_result(item)
                self._wake.set()
                return
        self._ready.append(_Ready(item=item, since=self._clock()))
        self._arrived.set()
        self._wake.set()

    def _release_waiter(self, exc: Exception) -> None:
        while self._waiters:
            handoff = self._waiters.popleft()
            if not handoff.done():
                failure = InfrastructureError(
                    f"pool start failed: {exc}",
                    code=ErrorCode.CONTAINER_START_FAILED,
                    op="pool.start",
                    retryable=True,
                )
                handoff.set_exception(failure)
                return

    def _expire_idle(self) -> None:
        # A sandbox idle too long is close to the deadline on its labels:
        # it is destroyed, never handed out.
        now = self._clock()
        while self._ready and now - self._ready[0].since > self._max_idle_s:
            self._track(self._destroy(self._ready.popleft().item))

    def _track(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop refilling and destroy every sandbox the pool still holds."""
        self._closed = True
        if self._refiller is not None:
            self._refiller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refiller
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        ready = [entry.item for entry in self._ready]
        self._ready.clear()
        await asyncio.gather(*(self._destroy(item) for item in ready), return_exceptions=True)

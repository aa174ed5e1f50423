"""Agent runs the server is running, and their events as they happen.

The server opens one :class:`~orchestrator.agent.Agent` on its platform
(when a model is configured). :class:`Runs` starts runs on it and keeps,
for each run under way, every event so far: a stream that starts late
replays them, then waits for the next. Once a run has ended it is forgotten
here; its state, result and events are read back from its files
(``runs/<run_id>/`` and ``runs.db`` in the state directory).

With ``server.resume_runs``, :meth:`Runs.resume_interrupted` (called as the
server starts) resumes every run a stopped process left unfinished and no
live process drives (see :meth:`~orchestrator.agent.Agent.resume`); the
server's shutdown suspends its runs instead of cancelling them. A run whose
lease is held by a process this host cannot check (one of another boot, a
server restarted after a reboot; of another host; or in another container's
PID namespace) may be orphaned, which
shows only when its lease expires: a timer at that expiry resumes it then
(and waits for the next expiry while that process renews the lease).
:meth:`Runs.aclose` cancels the timers as the server stops (:meth:`Runs.resuming`
does both in the server's lifespan).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agent import (
    Agent,
    AgentEvent,
    LeaseHeld,
    RunFinished,
    RunHandle,
    RunResult,
    RunRow,
    RunState,
    read_events,
    read_result,
    read_state,
)
from orchestrator.errors import NotFoundError, UsageError

__all__ = ["Runs"]

_log = logging.getLogger(__name__)

_PAST_EXPIRY_S = 0.1
"""How long after a lease's expiry its timer fires: a lease is free once its expiry has
passed, and a timer firing a hair early would find it held still."""


@dataclass(kw_only=True)
class _Live:
    """A run under way: its handle, its events so far, a signal for the next one."""

    handle: RunHandle = field(init=False)
    """Set once the run has started (its first events may come before)."""
    events: list[AgentEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: AgentEvent) -> None:
        self.events.append(event)
        # Wake every waiting stream at once; later waits take the new signal.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    @property
    def ended(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], RunFinished)


class Runs:
    """Starts runs on the agent, and answers their state, result and events."""

    def __init__(self, agent: Agent | None, state_dir: Path) -> None:
        """Runs on ``agent`` (None: no model configured, so no runs); files in ``state_dir``."""
        self._agent = agent
        self._state_dir = state_dir
        self._live: dict[str, _Live] = {}
        self._forgetting: set[asyncio.Task[None]] = set()
        self._expiry_timers: dict[str, asyncio.Task[None]] = {}

    @property
    def available(self) -> bool:
        """Whether runs can be started (a model is configured)."""
        return self._agent is not None

    def start(self, goal: str, *, principal: str, run_id: str) -> RunHandle:
        """Start a run (raises :class:`~orchestrator.errors.UsageError` for a used run id)."""
        assert self._agent is not None, "check available first"
        live = _Live()
        live.handle = self._agent.start(goal, principal=principal, run_id=run_id, on_event=live.add)
        return self._track(run_id, live)

    @asynccontextmanager
    async def resuming(self) -> AsyncIterator[list[str]]:
        """:meth:`resume_interrupted` now, :meth:`aclose` on leaving (the server's lifespan)."""
        try:
            yield await self.resume_interrupted()
        finally:
            await self.aclose()

    async def resume_interrupted(self) -> list[str]:
        """Resume every interrupted run no live process drives; the ids resumed.

        A run whose lease a process this host cannot check holds gets a timer at the
        lease's expiry instead (see the module's docstring).
        """
        if self._agent is None:
            return []
        resumed = []
        try:
            interrupted = await self._agent.interrupted()
            elsewhere = await self._agent.held_elsewhere()
        except Exception:  # the server serves on; the runs wait for the next start
            _log.exception("the interrupted runs could not be listed")
            return []
        for row in interrupted:
            if await self._resume(row.run_id):
                resumed.append(row.run_id)
        if resumed:
            _log.info("resumed %d interrupted run(s): %s", len(resumed), ", ".join(resumed))
        for row in elsewhere:
            self._resume_at_expiry(row)
        return resumed

    async def _resume(self, run_id: str) -> bool | None:
        """Resume one run: True once resumed, False when a live process holds its lease,
        None when it cannot be resumed (ended meanwhile, damaged: logged)."""
        assert self._agent is not None
        live = _Live()
        try:
            live.handle = await self._agent.resume(run_id, on_event=live.add)
        except LeaseHeld:
            return False  # another process took it first, or renewed it
        except (NotFoundError, UsageError) as exc:
            _log.info("run %s is not resumed: %s", run_id, exc)
            return None
        except Exception:
            _log.exception("run %s could not be resumed", run_id)
            return None
        self._track(run_id, live)
        return True

    def _resume_at_expiry(self, row: RunRow) -> None:
        """Resume ``row``'s run once its lease has expired, unless it is renewed meanwhile."""
        run_id = row.run_id
        if run_id in self._expiry_timers or row.lease_expires_at is None:
            return
        _log.info(
            "run %s: its lease is held by a process this host cannot check (%s); it is "
            "resumed if that lease expires, at %s",
            run_id,
            (row.holder or "").split("#", 1)[0],
            time.strftime("%H:%M:%S", time.localtime(row.lease_expires_at)),
        )
        timer = asyncio.create_task(
            self._at_expiry(run_id, row.lease_expires_at), name=f"runs:lease-expiry:{run_id}"
        )
        self._expiry_timers[run_id] = timer
        timer.add_done_callback(lambda _: self._expiry_timers.pop(run_id, None))

    async def _at_expiry(self, run_id: str, expires_at: float) -> None:
        assert self._agent is not None
        while True:
            await asyncio.sleep(max(0.0, expires_at - time.time()) + _PAST_EXPIRY_S)
            resumed = await self._resume(run_id)
            if resumed:
                _log.info("resumed run %s, whose lease had expired", run_id)
            if resumed is not False:
                return
            # Renewed: the process holding it is alive. Watch for its next expiry while
            # it is one this host cannot check; a process of this host is checked at the
            # next start, like any other.
            try:
                held = await self._agent.held_elsewhere()
            except Exception:
                _log.exception("run %s: its lease could not be read", run_id)
                return
            row = next((row for row in held if row.run_id == run_id), None)
            if row is None or row.lease_expires_at is None:
                return
            expires_at = row.lease_expires_at

    async def aclose(self) -> None:
        """Cancel the timers waiting for leases to expire (the server stops)."""
        timers = list(self._expiry_timers.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    def _track(self, run_id: str, live: _Live) -> RunHandle:
        handle = live.handle
        self._live[run_id] = live
        forget = asyncio.create_task(self._forget_at_end(run_id, handle), name=f"runs:{run_id}")
        self._forgetting.add(forget)
        forget.add_done_callback(self._forgetting.discard)
        return handle

    async def _forget_at_end(self, run_id: str, handle: RunHandle) -> None:
        await handle.wait()
        self._live.pop(run_id, None)

    def under_way(self, principal: str) -> int:
        """How many of ``principal``'s runs are under way here (started or resumed)."""
        return sum(
            1
            for live in self._live.values()
            if not live.handle.done() and live.handle.state.principal == principal
        )

    def handle(self, run_id: str) -> RunHandle | None:
        """The run's handle while it is under way."""
        live = self._live.get(run_id)
        return None if live is None else live.handle

    async def state(self, run_id: str) -> RunState:
        """The run's state: as it is now, or its latest checkpoint (raises NotFoundError)."""
        live = self._live.get(run_id)
        if live is not None:
            return live.handle.state.model_copy(deep=True)
        return await asyncio.to_thread(read_state, self._state_dir, run_id)

    async def principal(self, run_id: str) -> str | None:
        """Who the run acts for, as its state records it; None when there is no such run."""
        try:
            run = await self.state(run_id)
        except NotFoundError:
            return None
        return run.principal

    async def result(self, run_id: str) -> RunResult | None:
        """The run's result without its log, once it has ended (raises NotFoundError)."""
        live = self._live.get(run_id)
        if live is not None and not live.handle.done():
            if not live.handle.state.status.finished:
                return None
            # Ended, its files being written: a moment.
            await live.handle.wait()
        return await asyncio.to_thread(read_result, self._state_dir, run_id, with_log=False)

    async def events(self, run_id: str) -> AsyncGenerator[AgentEvent]:
        """Every event of the run, in order, as they happen; ends with the run.

        Raises :class:`~orchestrator.errors.NotFoundError` (at the first
        ``anext``) when there is no such run.
        """
        live = self._live.get(run_id)
        if live is None:
            for event in await asyncio.to_thread(read_events, self._state_dir, run_id):
                yield event
            return
        sent = 0
        while True:
            changed = live.changed
            while sent < len(live.events):
                yield live.events[sent]
                sent += 1
            if live.ended:
                return
            if live.handle.done():
                # Ended without a final event seen here: the rest is in its files.
                for event in (await asyncio.to_thread(read_events, self._state_dir, run_id))[sent:]:
                    yield event
                return
            waiting = asyncio.ensure_future(changed.wait())
            ending = asyncio.ensure_future(live.handle.wait())
            try:
                await asyncio.wait({waiting, ending}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                ending.cancel()

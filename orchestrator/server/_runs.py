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
server's shutdown suspends its runs instead of cancelling them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agent import (
    Agent,
    AgentEvent,
    LeaseHeld,
    RunFinished,
    RunHandle,
    RunResult,
    RunState,
    read_events,
    read_result,
    read_state,
)
from orchestrator.errors import NotFoundError

__all__ = ["Runs"]

_log = logging.getLogger(__name__)


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

    async def resume_interrupted(self) -> list[str]:
        """Resume every interrupted run no live process drives; the ids resumed."""
        if self._agent is None:
            return []
        resumed = []
        try:
            interrupted = await self._agent.interrupted()
        except Exception:  # the server serves on; the runs wait for the next start
            _log.exception("the interrupted runs could not be listed")
            return []
        for row in interrupted:
            live = _Live()
            try:
                live.handle = await self._agent.resume(row.run_id, on_event=live.add)
            except LeaseHeld:
                continue  # another process took it first
            except Exception:
                _log.exception("run %s could not be resumed", row.run_id)
                continue
            self._track(row.run_id, live)
            resumed.append(row.run_id)
        if resumed:
            _log.info("resumed %d interrupted run(s): %s", len(resumed), ", ".join(resumed))
        return resumed

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

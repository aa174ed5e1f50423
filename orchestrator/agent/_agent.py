"""The agent: runs goals on an open platform, every tool call through its gateway.

::

    async with Platform.open(config) as platform, Agent.open(platform) as agent:
        result = await agent.run("Write primes.txt with the primes below 100")

The agent is an entrance like the CLI or the HTTP API: it takes the
platform's gateway, registry, workspaces and configuration and wires nothing
of the platform itself. What it adds is its own: the model client (the
configuration's ``model`` section) and memory (its ``memory`` section).

Runs are durable (``config.checkpoint``): each is checkpointed after every
step in ``runs.db`` and driven under a lease renewed by a heartbeat;
:meth:`Agent.resume` continues a run whose process stopped, and
:meth:`Agent.interrupted` lists the runs waiting for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from orchestrator.agent._approvals import ApprovalWatch
from orchestrator.agent._config import AgentConfig
from orchestrator.agent._durable import RUNS_DB, LeaseHeld, RunRow, RunStore, new_holder
from orchestrator.agent._events import AgentEvent
from orchestrator.agent._loop import RunLoop
from orchestrator.agent._parts import Reporter, RunParts
from orchestrator.agent._result import RunResult
from orchestrator.agent._run_state import RunState
from orchestrator.agent._runlog import RunFiles, RunRecorder
from orchestrator.agent._state import RunStatus
from orchestrator.agent.memory import Memory
from orchestrator.agent.model import ModelClient
from orchestrator.errors import InfrastructureError, NotFoundError, UsageError
from orchestrator.platform import Platform
from orchestrator.runid import run_id_problem

__all__ = ["Agent", "LeaseHeld", "RunHandle"]

_log = logging.getLogger(__name__)


class RunHandle:
    """A run under way (from :meth:`Agent.start`): its id, a way to stop it, its result."""

    def __init__(self, run_id: str, loop: RunLoop, task: asyncio.Task[RunResult]) -> None:
        self.run_id = run_id
        """The run."""
        self._loop = loop
        self._task = task

    @property
    def state(self) -> RunState:
        """The run's state as it is now (read only: the run owns it)."""
        return self._loop.state

    def done(self) -> bool:
        """Whether the run has ended and been recorded."""
        return self._task.done()

    def cancel(self, reason: str = "the run was cancelled") -> None:
        """Stop the run: model and tool calls are cancelled, it is recorded as cancelled."""
        if not self._task.done():
            self._loop.cancel_reason = reason
            self._task.cancel()

    def suspend(self) -> None:
        """Stop driving the run without ending it (the orchestrator stops): its checkpoint,
        calls in flight included, stays for :meth:`Agent.resume`."""
        if not self._task.done():
            self._loop.suspending = True
            self._task.cancel()

    async def wait(self) -> None:
        """Wait for the run to end, whatever the end (never raises)."""
        await asyncio.wait([self._task])

    async def result(self) -> RunResult:
        """Wait for the end; a run cancelled with :meth:`cancel` gives its cancelled result.

        Cancelling the caller of this method leaves the run going (see
        :meth:`Agent.run` for a run that ends with its caller).
        """
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            recorded = self._loop.result
            if self._task.done() and recorded is not None:
                return recorded
            raise


class Agent:
    """Runs goals with a model, tools through the platform's gateway, and memory.

    Build one with :meth:`open` (which opens the model client and memory from
    the platform's configuration and closes them after), or pass a
    ``model`` and ``memory`` of your own. ``approvals`` is the
    :class:`ApprovalWatch` given to ``Platform.open``, to report calls
    waiting for approval as events. ``clock`` gives the events' times.
    """

    def __init__(
        self,
        platform: Platform,
        config: AgentConfig | None = None,
        *,
        model: ModelClient | None = None,
        memory: Memory | None = None,
        approvals: ApprovalWatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or AgentConfig()
        """The agent's settings."""
        self._platform = platform
        self._owns_model = model is None
        settings = self.config.model or platform.config.model
        self._model = model or ModelClient(settings, on_retry=platform.metrics.agent.model_retried)
        platform.metrics.agent.declare_model(self._model.model)
        self._memory = memory
        # One writer thread for every run's files: the event loop never waits
        # on the disk, and each run's writes land in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-runs")
        self._parts = RunParts.build(
            config=self.config,
            gateway=platform.gateway,
            registry=platform.registry,
            workspaces=platform.workspaces,
            model=self._model,
            tools=platform.registry.openai_tools(),
            approvals=approvals,
            metrics=platform.metrics.agent,
            clock=clock,
            artifacts=platform.artifacts,
            accepts_images=settings.accepts_images,
            audit_path=platform.config.audit_path,
        )
        self._runs: dict[str, RunHandle] = {}
        self._store = (
            RunStore(platform.config.state_dir / RUNS_DB) if self.config.checkpoint else None
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        platform: Platform,
        config: AgentConfig | None = None,
        *,
        approvals: ApprovalWatch | None = None,
        memory: Memory | None = None,
        suspend_on_close: bool = False,
    ) -> AsyncIterator[Agent]:
        """An agent with the configured model and (when enabled) memory; closed on leaving
        (its runs under way suspended rather than cancelled with ``suspend_on_close``).

        Memory is on when ``config.memory`` says so, else when the
        configuration's ``memory.enabled`` does. Raises
        :class:`~orchestrator.errors.ConfigError` when no model is configured.
        """
        config = config or AgentConfig()
        settings = platform.config
        enabled = settings.memory.enabled if config.memory is None else config.memory
        opened = None
        if memory is None and enabled:
            opened = memory = await Memory.open(
                settings.memory,
                state_dir=settings.state_dir,
                model=config.model or settings.model,
            )
        try:
            agent = cls(platform, config, memory=memory if enabled else None, approvals=approvals)
        except BaseException:
            if opened is not None:
                await opened.close()
            raise
        try:
            yield agent
        finally:
            await agent.close(suspend=suspend_on_close)
            if opened is not None:
                await opened.close()

    @property
    def platform(self) -> Platform:
        """The platform the agent's runs use."""
        return self._platform

    @property
    def model(self) -> ModelClient:
        """The model client."""
        return self._model

    @property
    def memory(self) -> Memory | None:
        """The memory runs recall from and remember in (none: memory off)."""
        return self._memory

    def start(
        self,
        goal: str,
        *,
        principal: str | None = None,
        run_id: str | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
    ) -> RunHandle:
        """Start a run of ``goal`` and return at once; see :meth:`run`."""
        if not goal.strip():
            raise UsageError("a run needs a goal")
        who = principal or self.config.default_principal
        for what, text in (("goal", goal), ("principal", who)):
            if problem := _not_utf8(text):
                raise UsageError(f"the {what} is not valid text: {problem}")
        run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        if problem := run_id_problem(run_id):
            raise UsageError(problem)
        files = RunFiles.of(self._platform.config.state_dir, run_id)
        # A run's log or checkpoint marks its id as used (its artifacts alone do not:
        # tool calls outside any agent run keep theirs there too). The database is
        # asked on the loop: one indexed read, well under a millisecond.
        if (
            run_id in self._runs
            or files.log.exists()
            or files.state.exists()
            or (self._store is not None and self._store.exists(run_id))
        ):
            raise UsageError(f"run id {run_id!r} is already used")
        state = RunState(run_id=run_id, goal=goal, principal=who)
        return self._launch(state, files, on_event=on_event, holder=None, resumed=False)

    async def resume(
        self, run_id: str, *, on_event: Callable[[AgentEvent], None] | None = None
    ) -> RunHandle:
        """Continue run ``run_id`` from its latest checkpoint (its process stopped).

        Takes the run's lease first: raises :class:`LeaseHeld` when a live
        process drives it, :class:`~orchestrator.errors.NotFoundError` when
        there is no such run, :class:`~orchestrator.errors.UsageError` when it
        has ended (or checkpoints are off). Calls in flight at the stop are
        settled as ``_resume`` says; then the run goes on with this agent's
        settings (its deadline, if it had one, stays).
        """
        store = self._store
        if store is None:
            raise UsageError("checkpoints are off (checkpoint: false): no run can be resumed")
        if run_id in self._runs:
            raise LeaseHeld(f"run {run_id} is already being driven by this agent")
        holder = new_holder()
        exists = await asyncio.to_thread(store.exists, run_id)
        if not exists:
            raise NotFoundError(f"no checkpoint of run {run_id!r} in {store.path}")
        await asyncio.to_thread(store.acquire, run_id, holder, lease_s=self.config.lease_s)
        try:
            state = await asyncio.to_thread(store.load, run_id)
            if state is None:  # pragma: no cover - checked above
                raise NotFoundError(f"no checkpoint of run {run_id!r} in {store.path}")
            if state.status.finished:
                raise UsageError(
                    f"run {run_id} has ended ({state.status.value}): nothing to resume"
                )
        except BaseException:
            await asyncio.to_thread(store.release, run_id, holder)
            raise
        files = RunFiles.of(self._platform.config.state_dir, run_id)
        return self._launch(state, files, on_event=on_event, holder=holder, resumed=True)

    async def interrupted(self) -> list[RunRow]:
        """Unfinished runs no live process drives: the ones :meth:`resume` can continue."""
        if self._store is None:
            return []
        rows = await asyncio.to_thread(self._store.interrupted)
        return [row for row in rows if row.run_id not in self._runs]

    async def held_elsewhere(self) -> list[RunRow]:
        """Unfinished runs whose lease a process this host cannot check (another boot,
        another host, another container's PID namespace) holds, not yet expired: if that
        process is gone, :meth:`resume` can continue them once the lease expires
        (``lease_expires_at``)."""
        if self._store is None:
            return []
        rows = await asyncio.to_thread(self._store.held_elsewhere)
        return [row for row in rows if row.run_id not in self._runs]

    def _launch(
        self,
        state: RunState,
        files: RunFiles,
        *,
        on_event: Callable[[AgentEvent], None] | None,
        holder: str | None,
        resumed: bool,
    ) -> RunHandle:
        run_id, who = state.run_id, state.principal
        store = self._store
        if store is not None and holder is None:
            holder = new_holder()
        memory = self._memory.for_run(principal=who, run_id=run_id) if self._memory else None
        recorder = RunRecorder(
            files,
            self._writer,
            store=store,
            holder=holder,
            written=len(state.messages),
            rewrites=state.rewrites,
        )
        reporter = Reporter(run_id, recorder, self._parts, on_event)
        loop = RunLoop(self._parts, state, reporter, memory=memory, resumed=resumed)
        task = asyncio.create_task(
            self._drive(loop, holder, leased=resumed), name=f"agent-run:{run_id}"
        )
        handle = RunHandle(run_id, loop, task)
        self._runs[run_id] = handle
        task.add_done_callback(lambda _: self._runs.pop(run_id, None))
        return handle

    async def _drive(self, loop: RunLoop, holder: str | None, *, leased: bool) -> RunResult:
        """Run ``loop`` under the run's lease (taken first unless ``leased``), renewed
        by a heartbeat, given up at the end. A lease that cannot be taken ends the run
        before it starts (see :meth:`RunLoop.not_started`)."""
        store, run_id = self._store, loop.state.run_id
        if store is None or holder is None:
            return await loop.run()
        lease_s = self.config.lease_s
        if not leased:
            try:
                await asyncio.to_thread(store.acquire, run_id, holder, lease_s=lease_s)
            except LeaseHeld as exc:
                # Two processes started one new run id at once: the other one drives it.
                return loop.not_started(
                    RunStatus.CANCELLED,
                    f"{exc}; this process did not start it (the run, its files and its "
                    "checkpoints are that process's)",
                )
            except InfrastructureError as exc:
                return loop.not_started(
                    RunStatus.FAILED,
                    f"the run's lease could not be taken, so it did not start: {exc}",
                )
        beating = asyncio.create_task(
            self._heartbeat(store, loop, holder, asyncio.current_task()),
            name=f"agent-lease:{run_id}",
        )
        try:
            return await loop.run()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            if not loop.lost:
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(store.release, run_id, holder))

    async def _heartbeat(
        self,
        store: RunStore,
        loop: RunLoop,
        holder: str,
        driver: asyncio.Task[object] | None,
    ) -> None:
        """Renew the lease every third of its length; stop the run if it was taken."""
        run_id, lease_s = loop.state.run_id, self.config.lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                held = await asyncio.to_thread(store.heartbeat, run_id, holder, lease_s=lease_s)
            except Exception:
                _log.warning("run %s: the lease could not be renewed", run_id, exc_info=True)
                continue
            if not held:
                loop.lost = True
                if driver is not None:
                    driver.cancel()
                return

    async def run(
        self,
        goal: str,
        *,
        principal: str | None = None,
        run_id: str | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
    ) -> RunResult:
        """Run ``goal`` to its end and return how it ended; never raises for the run's sake.

        ``principal`` is who the run acts for (policy rules, rate limits,
        memory scope; default ``config.default_principal``); ``run_id``
        names the run (its workspace, budget and files; default: a fresh
        one); ``on_event`` sees every event as it happens (keep it quick).
        A failed run is a result (``success`` false, a ``reason``); cancelling
        the caller cancels the run, records it as cancelled and raises
        ``CancelledError``. A run whose lease cannot be taken does not start
        and writes nothing: ``cancelled`` when another process took the lease
        for the same run id first (that process drives the run), ``failed``
        when ``runs.db`` could not be used; the reason says which.
        """
        handle = self.start(goal, principal=principal, run_id=run_id, on_event=on_event)
        try:
            return await handle.result()
        except asyncio.CancelledError:
            handle.cancel("the caller cancelled the run")
            await handle.wait()
            raise

    async def close(self, *, suspend: bool = False) -> None:
        """Cancel the runs still going (recorded as cancelled), then release the model client.

        ``suspend``: stop them without ending them instead (a server being
        redeployed), so they can be resumed; checkpoints off, they are cancelled.
        """
        handles = list(self._runs.values())
        for handle in handles:
            if suspend and self._store is not None:
                handle.suspend()
            else:
                handle.cancel("the agent was closed")
        for handle in handles:
            await handle.wait()
        if self._store is not None:
            # The writer thread's own connection to runs.db goes with it, and this
            # thread's (the event loop's, for the steps committed on it).
            self._writer.submit(self._store.close_thread_connection)
            self._store.close_thread_connection()
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        if self._owns_model:
            await self._model.close()


def _not_utf8(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8, if it cannot.

    Python keeps the bytes of a command-line argument that are not UTF-8 as
    lone surrogates; no event, checkpoint or log could hold them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"character {exc.start + 1} ({text[exc.start]!r}) is not UTF-8; was it written in "
            "another encoding?"
        )
    return None

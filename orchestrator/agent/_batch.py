"""Many agent runs at once from one agent: :func:`run_batch`.

::

    items = read_batch(Path("tasks.jsonl"))
    async with Platform.open(config) as platform, Agent.open(platform) as agent:
        batch = run_batch(agent, items, concurrency=8)
        async for result in batch:  # one BatchResult as each run ends
            print(result.id, result.status, batch.progress.line())

Each item is an ordinary run of the agent (``Agent.start``): its own run id,
workspace (seeded with the item's files), model budget, rate limits, memory
scope and approvals, as for a single run. At most ``concurrency`` runs go at
once; a run that fails is a result like any other and the batch goes on.
:meth:`Batch.stop` starts nothing more and cancels the runs under way (their
sandboxes removed, each recorded as cancelled), whose results still come out;
leaving the ``async for`` early, or cancelling it, cancels them too. An item
that never becomes a run (stopped, or its files or its start refused) leaves
nothing behind: the workspace its files were written to is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orchestrator.agent._agent import Agent, RunHandle
from orchestrator.agent._batch_file import BatchItem, BatchResult
from orchestrator.agent._events import AgentEvent, ToolCallFinished
from orchestrator.agent._state import RunStatus
from orchestrator.errors import StockadeError, UsageError

__all__ = ["Batch", "BatchProgress", "run_batch"]


@dataclass(kw_only=True)
class BatchProgress:
    """A batch's counts as it goes (updated in place by the batch; read it any time)."""

    total: int
    """Runs the batch was given."""
    skipped: int = 0
    """Runs left out because an earlier batch finished them (set by the caller)."""
    running: int = 0
    """Runs under way."""
    complete: int = 0
    """Runs that completed."""
    failed: int = 0
    """Runs that failed."""
    cancelled: int = 0
    """Runs cancelled (the batch was stopped)."""
    tool_calls: int = 0
    """Tool calls that came back, every run together."""
    stopping: bool = False
    """Whether the batch was stopped: no new run starts."""
    started_at: float = field(default_factory=time.monotonic)
    """When the batch started (``time.monotonic()``)."""

    @property
    def done(self) -> int:
        """Runs that ended, however."""
        return self.complete + self.failed + self.cancelled

    def elapsed_s(self, now: float | None = None) -> float:
        """Seconds since the batch started."""
        return (time.monotonic() if now is None else now) - self.started_at

    def tool_calls_per_s(self, now: float | None = None) -> float:
        """Tool calls a second since the batch started."""
        elapsed = self.elapsed_s(now)
        return self.tool_calls / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        """One line for people: done, running, failed, tool calls a second, time."""
        parts = [
            f"{self.done}/{self.total} done",
            f"{self.running} running",
            f"{self.failed} failed",
        ]
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        parts.append(f"{self.tool_calls_per_s(now):.1f} tool calls/s")
        parts.append(f"{self.elapsed_s(now):.0f} s")
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already done)")
        if self.stopping:
            parts.append("stopping: no new runs")
        return ", ".join(parts)


class Batch:
    """Runs under way from :func:`run_batch`: iterate it for their results as they end."""

    def __init__(
        self,
        agent: Agent,
        items: Iterable[BatchItem],
        *,
        concurrency: int,
        principal: str | None,
        on_event: Callable[[str, AgentEvent], None] | None,
    ) -> None:
        self._agent = agent
        self._pending = deque(items)
        self._concurrency = concurrency
        self._principal = principal
        self._on_event = on_event
        self._handles: dict[str, RunHandle] = {}
        self._stop_reason: str | None = None
        self._iterated = False
        self.progress = BatchProgress(total=len(self._pending))
        """The counts so far."""

    def stop(self, reason: str = "the batch was stopped") -> None:
        """Start no more runs and cancel the ones under way (their results still come)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self.progress.stopping = True
        for handle in list(self._handles.values()):
            handle.cancel(reason)

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        if self._iterated:
            raise UsageError("a batch is iterated once")
        self._iterated = True
        return self._results()

    async def _results(self) -> AsyncIterator[BatchResult]:
        running: set[asyncio.Task[BatchResult]] = set()
        try:
            while running or (self._pending and self._stop_reason is None):
                while (
                    self._pending and self._stop_reason is None and len(running) < self._concurrency
                ):
                    item = self._pending.popleft()
                    running.add(asyncio.create_task(self._one(item), name=f"batch:{item.id}"))
                finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    yield self._count(task.result())
        finally:
            # Left early (the caller broke off or was cancelled): nothing keeps going.
            if running:
                self.stop("the batch was left")
                await asyncio.shield(asyncio.wait(running))

    def _count(self, result: BatchResult) -> BatchResult:
        progress = self.progress
        if result.status is RunStatus.COMPLETE:
            progress.complete += 1
        elif result.status is RunStatus.CANCELLED:
            progress.cancelled += 1
        else:
            progress.failed += 1
        return result

    async def _one(self, item: BatchItem) -> BatchResult:
        """Run one item to its end; never raises for the run's sake."""
        run_id = f"{item.id}-{uuid.uuid4().hex[:8]}"
        handle: RunHandle | None = None
        seeding: asyncio.Future[None] | None = None
        try:
            try:
                if item.files:
                    workspace = self._agent.platform.workspaces.open(run_id)
                    # Shielded: a cancelled wait must not leave the thread writing into a
                    # workspace being removed (see _discard).
                    seeding = asyncio.ensure_future(
                        asyncio.to_thread(_seed, workspace.path, item.files)
                    )
                    await asyncio.shield(seeding)
            except (OSError, StockadeError) as exc:
                error = f"the workspace files could not be written: {exc}"
                return BatchResult.not_started(item.id, run_id, RunStatus.FAILED, error)
            if self._stop_reason is not None:
                return BatchResult.not_started(
                    item.id, run_id, RunStatus.CANCELLED, self._stop_reason
                )
            try:
                handle = self._agent.start(
                    item.goal,
                    principal=item.principal or self._principal,
                    run_id=run_id,
                    on_event=lambda event: self._event(item.id, event),
                )
            except StockadeError as exc:
                return BatchResult.not_started(item.id, run_id, RunStatus.FAILED, str(exc))
        finally:
            if handle is None:
                # Never started: the run would have removed (or kept) its workspace at
                # its end; nothing else would remove what was written for it here.
                await asyncio.shield(self._discard(run_id, seeding))
        self._handles[run_id] = handle
        self.progress.running += 1
        try:
            return BatchResult.of(item.id, await handle.result())
        except Exception as exc:  # a fault of the run's own code: that run fails alone
            error = f"the run broke: {exc!r}"
            return BatchResult.not_started(item.id, run_id, RunStatus.FAILED, error)
        finally:
            self.progress.running -= 1
            self._handles.pop(run_id, None)

    async def _discard(self, run_id: str, seeding: asyncio.Future[None] | None) -> None:
        """Remove the workspace of a run that never started, once nothing writes into it."""
        if seeding is not None:
            await asyncio.wait([seeding])
        await asyncio.to_thread(self._agent.platform.workspaces.close, run_id, keep=False)

    def _event(self, item_id: str, event: AgentEvent) -> None:
        if isinstance(event, ToolCallFinished) and event.status != "skipped":
            self.progress.tool_calls += 1
        if self._on_event is not None:
            self._on_event(item_id, event)


def run_batch(
    agent: Agent,
    items: Iterable[BatchItem],
    *,
    concurrency: int = 4,
    principal: str | None = None,
    on_event: Callable[[str, AgentEvent], None] | None = None,
) -> Batch:
    """Run ``items`` on ``agent``, at most ``concurrency`` at once; iterate the result.

    ``principal`` is who runs act for when their item names nobody (default:
    the agent's ``default_principal``); ``on_event`` sees every run's events
    with the item's id (keep it quick). Each run is an ordinary run of the
    agent (see the module docstring); results come in the order runs end.
    """
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, not {concurrency}")
    return Batch(agent, items, concurrency=concurrency, principal=principal, on_event=on_event)


def _seed(root: Path, files: dict[str, str]) -> None:
    """Write an item's files into its fresh workspace (paths checked by :class:`BatchItem`)."""
    for name, content in files.items():
        target = root.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # never write through a link left there
        target.write_text(content, encoding="utf-8")

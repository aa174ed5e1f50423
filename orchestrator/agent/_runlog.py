"""A run's records in the state directory: execution log, checkpoints, result.

``runs/<run_id>/`` holds ``log.jsonl`` (every event, one JSON line each, in
order) and, once the run has ended, ``result.json`` (the :class:`RunResult`
without its log, which ``log.jsonl`` holds). The directory is private to the
user (the log holds what the model wrote and what the tools answered). The
checkpoints of the :class:`RunState` go to ``runs.db`` (``_durable``: one
transaction per step, new messages appended); runs recorded before it have a
``state.json`` instead, which the readers still read.

A :class:`RunRecorder` writes them on one writer thread shared by the
agent's runs, so the event loop never waits on the disk and a run's writes
land in the order they were made: the step's transaction first (it checks
the run's lease: a process that lost it writes nothing more), then the log
lines, then the result. Checkpoints are not ``fsync``-ed: they outlive the
orchestrator process (a redeploy, a kill), not a power cut; a process killed
within the milliseconds a write takes loses that last step (its run resumes
from the step before), except for the step that names calls about to run,
which the loop waits for: if that one cannot be committed, the calls do not
go out and the run fails, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from orchestrator.agent._durable import (
    RUNS_DB,
    CheckpointFailed,
    Delta,
    LeaseLost,
    RunRow,
    RunStore,
    delta_of,
)
from orchestrator.agent._events import AgentEvent, event_adapter
from orchestrator.agent._result import RunResult
from orchestrator.agent._run_state import RunState
from orchestrator.errors import NotFoundError

__all__ = [
    "RUNS_DIR",
    "RunFiles",
    "RunRecorder",
    "RunSummary",
    "list_runs",
    "read_events",
    "read_result",
    "read_state",
]

_log = logging.getLogger(__name__)

RUNS_DIR = "runs"
"""The runs' directory, in the state directory."""


@dataclass(frozen=True, kw_only=True)
class RunFiles:
    """Where one run's files are."""

    root: Path
    """``<state_dir>/runs/<run_id>``."""

    @classmethod
    def of(cls, state_dir: Path, run_id: str) -> RunFiles:
        """The files of ``run_id`` under ``state_dir``."""
        return cls(root=state_dir / RUNS_DIR / run_id)

    @property
    def log(self) -> Path:
        """The execution log (JSON lines)."""
        return self.root / "log.jsonl"

    @property
    def state(self) -> Path:
        """The latest checkpoint of a run recorded before ``runs.db`` (read only)."""
        return self.root / "state.json"

    @property
    def result(self) -> Path:
        """The result, once the run has ended."""
        return self.root / "result.json"


def _write(
    files: RunFiles,
    lines: list[str],
    store: RunStore | None,
    delta: Delta | None,
    result: str | None,
) -> None:
    """Commit the step, then append ``lines`` to the log and replace the result (atomically).

    A run that lost its lease writes nothing more (:class:`LeaseLost`). A step
    that could not be committed (``runs.db`` locked, a full disk) still has its
    log lines appended, since they record what happened and would not be
    offered again, but not its result: a result beside a checkpoint of an
    unfinished run would say it ended where a restart resumes it. The error is
    raised after.
    """
    failure: Exception | None = None
    if store is not None and delta is not None:
        try:
            store.write(delta)
        except LeaseLost:
            raise
        except Exception as exc:
            failure = exc
    files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if lines:
        descriptor = os.open(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as log:
            log.write("".join(lines))
    if failure is not None:
        raise failure
    if result is not None:
        path = files.result
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(result)
        os.replace(temporary, path)


class RunRecorder:
    """Keeps one run's events and writes its log, checkpoints and result."""

    def __init__(
        self,
        files: RunFiles,
        writer: Executor,
        *,
        store: RunStore | None = None,
        holder: str | None = None,
        written: int = 0,
        rewrites: int = 0,
    ) -> None:
        """Write ``files`` on ``writer`` (one thread: writes land in order).

        ``store`` takes the checkpoints (None: none are written), under the
        lease of ``holder``; ``written`` messages (and ``rewrites``) are
        already in it (a resumed run's).
        """
        self.files = files
        self._writer = writer
        self._store = store
        self._holder = holder
        self._written = written
        self._rewrites = rewrites
        self._resync = False
        self._pending: list[str] = []
        self._last: Future[None] | None = None
        self.lost = False
        """True once a checkpoint found the run's lease held by another process."""
        self.events: list[AgentEvent] = []
        """Every event of the run so far."""

    def event(self, event: AgentEvent) -> None:
        """Keep ``event``; it is written with the next checkpoint."""
        self.events.append(event)
        self._pending.append(event.model_dump_json() + "\n")

    def checkpoint(self, state: RunState, result: RunResult | None = None) -> Future[None]:
        """Write the events so far and ``state`` (and ``result``); returns at once.

        The state is serialised here, on the loop, so the copy written is the
        state as it is now, whatever the loop does next; the writing happens
        on the writer thread, in order, while the run goes on. The run does
        not wait for it: a step's checkpoint lands while the next step (a
        model call, a tool call: milliseconds at least) is under way, and the
        loop's wait for the disk would be most of its own overhead per
        iteration (measured in ``benchmarks/agent_bench.py``: ~1.2 ms p50 per
        awaited checkpoint on the loaded 2-core VM, two per iteration).
        """
        lines, self._pending = self._pending, []
        delta = None
        if self._store is not None:
            if self._resync:  # a write failed: its messages are written again
                self._resync, self._written = False, 0
            delta, self._written, self._rewrites = delta_of(
                state, holder=self._holder, written=self._written, rewrites=self._rewrites
            )
        document = result.model_copy(update={"log": ()}).model_dump_json() if result else None
        written = self._writer.submit(_write, self.files, lines, self._store, delta, document)
        written.add_done_callback(self._written_back)
        self._last = written
        return written

    def _written_back(self, written: Future[None]) -> None:
        error = None if written.cancelled() else written.exception()
        if isinstance(error, LeaseLost):
            self.lost = True
            _log.warning("%s; this process stops driving the run", error)
        elif error is not None:
            self._resync = True
            # The run goes on (its result is returned); only resuming it would suffer.
            _log.error("run files %s could not be written", self.files.root, exc_info=error)

    async def durable(self, state: RunState) -> None:
        """Checkpoint and wait until it is committed; :class:`LeaseLost` if the lease is gone,
        :class:`CheckpointFailed` if it could not be committed.

        For the step that names calls about to run: a call must never run
        without its run knowing, after a restart, that it was asked for, so a
        checkpoint that could not be written is an error here (the calls must
        not go out), not a line in the log as for the other steps.
        When the run's earlier writes are done and the database is not
        locked, the step is committed right here (a WAL commit to the page
        cache, no ``fsync``, no wait for a lock: ~0.1 ms of the loop's time),
        which saves the hop to the writer thread and back: two wake-ups of
        sleeping threads, ~0.9 ms p50 per iteration on the loaded 2-core VM
        (``benchmarks/agent_bench.py --compare checkpoint``). Its events are
        written with the next checkpoint.
        """
        store, last = self._store, self._last
        if store is not None and not self._resync and (last is None or last.done()):
            delta, messages, rewrites = delta_of(
                state, holder=self._holder, written=self._written, rewrites=self._rewrites
            )
            try:
                committed = store.write_if_free(delta)
            except LeaseLost:
                self.lost = True
                raise
            except CheckpointFailed:
                _log.exception("run %s: the checkpoint could not be written", state.run_id)
                self._resync = True
                raise
            if committed:
                self._written, self._rewrites = messages, rewrites
                return
        written = asyncio.wrap_future(self.checkpoint(state))
        try:
            await asyncio.shield(written)
        except (LeaseLost, CheckpointFailed):  # logged by _written_back
            raise
        except Exception:  # the step is committed; only its log lines or result were not
            return

    async def renew_lease(self, run_id: str, lease_s: float) -> bool:
        """Renew ``run_id``'s lease for ``lease_s`` from now; False (and :attr:`lost`) when
        another process holds it.

        For the end of a run, before it releases what the run shares with whoever drives
        it (its workspace, its model budget): a process that was frozen past its lease
        learns here that another took the run over, not at the final checkpoint, after
        the damage. Renewed, the lease cannot be taken for ``lease_s``. A database that
        cannot be asked does not keep the run from ending (True).
        """
        store, holder = self._store, self._holder
        if store is None or holder is None:
            return not self.lost
        try:
            held = await asyncio.to_thread(store.heartbeat, run_id, holder, lease_s=lease_s)
        except Exception:
            _log.warning("run %s: the lease could not be renewed", run_id, exc_info=True)
            return not self.lost
        if not held:
            self.lost = True
        return held

    async def flush_events(self) -> None:
        """Write the events so far (no checkpoint), and wait for them to be on disk."""
        lines, self._pending = self._pending, []
        written = self._writer.submit(_write, self.files, lines, None, None, None)
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wrap_future(written))

    async def flush(self, state: RunState, result: RunResult | None = None) -> None:
        """Checkpoint, and wait until everything written so far is on disk.

        Shielded: a run being cancelled still gets its last checkpoint written.
        """
        written = asyncio.wrap_future(self.checkpoint(state, result))
        with contextlib.suppress(Exception):  # logged by _written_back
            await asyncio.shield(written)


def _store(state_dir: Path) -> RunStore | None:
    """The runs' database, when there is one (readers never create it)."""
    path = state_dir / RUNS_DB
    return RunStore(path) if path.exists() else None


def read_state(state_dir: Path, run_id: str) -> RunState:
    """The latest checkpoint of ``run_id`` (:class:`NotFoundError` when there is none)."""
    store = _store(state_dir)
    state = store.load(run_id) if store is not None else None
    if state is not None:
        return state
    path = RunFiles.of(state_dir, run_id).state
    try:
        return RunState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"no run {run_id!r} in {state_dir / RUNS_DIR}") from None


def read_events(state_dir: Path, run_id: str) -> list[AgentEvent]:
    """The execution log of ``run_id``; a line that does not parse (a torn write) is skipped."""
    path = RunFiles.of(state_dir, run_id).log
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"no run {run_id!r} in {state_dir / RUNS_DIR}") from None
    events = []
    # Split at "\n" only: str.splitlines also breaks at U+2028, U+2029 and NEL, which JSON
    # leaves unescaped inside strings, so a model writing one would cut its event in two
    # and both halves would be skipped.
    for line in text.split("\n"):
        with contextlib.suppress(ValidationError, ValueError):
            events.append(event_adapter.validate_json(line))
    return events


def read_result(state_dir: Path, run_id: str, *, with_log: bool = True) -> RunResult | None:
    """The result of ``run_id`` (with its log), or ``None`` while it has not ended.

    Raises :class:`NotFoundError` when there is no such run.
    """
    files = RunFiles.of(state_dir, run_id)
    if not files.root.is_dir() and not _known(state_dir, run_id):
        raise NotFoundError(f"no run {run_id!r} in {state_dir / RUNS_DIR}")
    try:
        result = RunResult.model_validate_json(files.result.read_bytes())
    except FileNotFoundError:
        return None
    if with_log:
        result = result.model_copy(update={"log": tuple(read_events(state_dir, run_id))})
    return result


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of ``stockade runs list``."""

    run_id: str
    status: str
    """The result's status; for a run without a result, its last checkpoint's state."""
    goal: str
    principal: str
    started_at: float
    duration_s: float
    iterations: int
    tool_calls: int
    tokens: int
    outcome: str
    """The answer's first line, or the reason it ended."""


def _known(state_dir: Path, run_id: str) -> bool:
    store = _store(state_dir)
    return store is not None and store.exists(run_id)


def _summaries(state_dir: Path) -> Iterator[RunSummary]:
    root = state_dir / RUNS_DIR
    store = _store(state_dir)
    rows = {row.run_id: row for row in store.rows()} if store is not None else {}
    for directory in root.iterdir() if root.is_dir() else ():
        files = RunFiles(root=directory)
        row = rows.pop(directory.name, None)
        try:
            if files.result.exists():
                result = RunResult.model_validate_json(files.result.read_bytes())
                outcome = result.answer if result.success and result.answer else result.reason
                yield RunSummary(
                    run_id=result.run_id,
                    status=result.status.value,
                    goal=result.goal,
                    principal=result.principal,
                    started_at=result.started_at,
                    duration_s=result.duration_s,
                    iterations=result.iterations,
                    tool_calls=result.tool_call_count,
                    tokens=result.usage.total_tokens,
                    outcome=(outcome or "").strip().split("\n")[0],
                )
            elif row is not None:
                yield _row_summary(row, row.lease_free(time.time()))
            elif files.state.exists():
                state = RunState.model_validate_json(files.state.read_bytes())
                yield RunSummary(
                    run_id=state.run_id,
                    status=state.status.value,
                    goal=state.goal,
                    principal=state.principal,
                    started_at=state.started_at,
                    duration_s=state.elapsed_s,
                    iterations=state.iteration,
                    tool_calls=sum(state.tool_calls.values()),
                    tokens=state.usage.total_tokens,
                    outcome="(no result: running, or its process ended)",
                )
        except (OSError, ValidationError, json.JSONDecodeError):
            continue  # a run being written, or not one of ours
    for row in rows.values():  # checkpointed, no files yet
        yield _row_summary(row, row.lease_free(time.time()))


def _row_summary(row: RunRow, free: bool) -> RunSummary:
    """A run without a result, from its checkpoint's row (its own columns first: the
    state document may be damaged, then it is ``{}``)."""
    document = row.state
    return RunSummary(
        run_id=row.run_id,
        status=row.status,
        goal=row.goal,
        principal=row.principal,
        started_at=row.started_at,
        duration_s=document.get("elapsed_s", 0.0),
        iterations=document.get("iteration", 0),
        tool_calls=sum(document.get("tool_calls", {}).values()),
        tokens=document.get("usage", {}).get("total_tokens", 0),
        outcome=(
            "(interrupted: its process stopped; `stockade runs resume` continues it)"
            if free
            else "(running)"
        ),
    )


def list_runs(state_dir: Path) -> list[RunSummary]:
    """Every run recorded under ``state_dir``, newest first."""
    return sorted(_summaries(state_dir), key=lambda s: -s.started_at)

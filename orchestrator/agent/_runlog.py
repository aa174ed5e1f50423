"""A run's files in the state directory: execution log, checkpoint, result.

``runs/<run_id>/`` holds ``log.jsonl`` (every event, one JSON line each, in
order), ``state.json`` (the latest checkpoint of the :class:`RunState`) and,
once the run has ended, ``result.json`` (the :class:`RunResult` without its
log, which ``log.jsonl`` holds). The directory is private to the user (the
log holds what the model wrote and what the tools answered).

A :class:`RunRecorder` writes them on one writer thread shared by the
agent's runs, so the event loop never waits on the disk and a run's writes
land in the order they were made. Checkpoints are not ``fsync``-ed: they
outlive the orchestrator process (a redeploy), not a power cut; and a
process killed within the milliseconds a write takes loses that last step
(its run resumes from the step before).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

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
        """The latest checkpoint."""
        return self.root / "state.json"

    @property
    def result(self) -> Path:
        """The result, once the run has ended."""
        return self.root / "result.json"


def _write(files: RunFiles, lines: list[str], state: str | None, result: str | None) -> None:
    """Append ``lines`` to the log, then replace the checkpoint and the result (atomically)."""
    files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if lines:
        descriptor = os.open(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as log:
            log.write("".join(lines))
    for path, text in ((files.state, state), (files.result, result)):
        if text is None:
            continue
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)


class RunRecorder:
    """Keeps one run's events and writes its log, checkpoints and result."""

    def __init__(self, files: RunFiles, writer: Executor) -> None:
        """Write ``files`` on ``writer`` (one thread: writes land in order)."""
        self.files = files
        self._writer = writer
        self._pending: list[str] = []
        self._last: Future[None] | None = None
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
        snapshot = state.model_dump_json()
        document = result.model_copy(update={"log": ()}).model_dump_json() if result else None
        written = self._writer.submit(_write, self.files, lines, snapshot, document)
        written.add_done_callback(self._written)
        self._last = written
        return written

    def _written(self, written: Future[None]) -> None:
        error = None if written.cancelled() else written.exception()
        if error is not None:
            # The run goes on (its result is returned); only resuming it would suffer.
            _log.error("run files %s could not be written", self.files.root, exc_info=error)

    async def flush(self, state: RunState, result: RunResult | None = None) -> None:
        """Checkpoint, and wait until everything written so far is on disk.

        Shielded: a run being cancelled still gets its last checkpoint written.
        """
        written = asyncio.wrap_future(self.checkpoint(state, result))
        with contextlib.suppress(OSError):  # logged by _written
            await asyncio.shield(written)


def read_state(state_dir: Path, run_id: str) -> RunState:
    """The latest checkpoint of ``run_id`` (:class:`NotFoundError` when there is none)."""
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
    for line in text.splitlines():
        with contextlib.suppress(ValidationError, ValueError):
            events.append(event_adapter.validate_json(line))
    return events


def read_result(state_dir: Path, run_id: str, *, with_log: bool = True) -> RunResult | None:
    """The result of ``run_id`` (with its log), or ``None`` while it has not ended.

    Raises :class:`NotFoundError` when there is no such run.
    """
    files = RunFiles.of(state_dir, run_id)
    if not files.root.is_dir():
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


def _summaries(root: Path) -> Iterator[RunSummary]:
    for directory in root.iterdir() if root.is_dir() else ():
        files = RunFiles(root=directory)
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


def list_runs(state_dir: Path) -> list[RunSummary]:
    """Every run recorded under ``state_dir``, newest first."""
    return sorted(_summaries(state_dir / RUNS_DIR), key=lambda s: -s.started_at)

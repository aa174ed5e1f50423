"""A run's files when its checkpoint cannot be committed: nothing the log holds is lost."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.agent import RunStarted, RunStatus, _durable
from orchestrator.agent._durable import RUNS_DB, CheckpointFailed, RunStore
from orchestrator.agent._result import RunResult
from orchestrator.agent._run_state import RunState
from orchestrator.agent._runlog import RunFiles, RunRecorder, read_events


def _started(run_id: str) -> RunStarted:
    return RunStarted(run_id=run_id, at=time.time(), goal="g", principal="p", model="m", tools=())


def test_a_step_that_cannot_be_committed_keeps_its_log_lines_not_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_durable, "LOCK_WAIT_S", 0.2)
    store = RunStore(tmp_path / RUNS_DB)
    store.acquire("r1", "holder", lease_s=60)
    files = RunFiles.of(tmp_path, "r1")
    state = RunState(run_id="r1", goal="g", principal="p", status=RunStatus.COMPLETE)
    result = RunResult.model_construct(run_id="r1", status=RunStatus.COMPLETE, log=())
    with ThreadPoolExecutor(max_workers=1) as writer:
        recorder = RunRecorder(files, writer, store=store, holder="holder")
        recorder.event(_started("r1"))
        locker = sqlite3.connect(tmp_path / RUNS_DB, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds runs.db past the wait
        try:
            with pytest.raises(CheckpointFailed):
                recorder.checkpoint(state, result).result(timeout=30)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert [e.type for e in read_events(tmp_path, "r1")] == ["run_started"], (
            "the event was dropped with the checkpoint"
        )
        assert not files.result.exists(), "a result beside an unfinished checkpoint"
        recorder.checkpoint(state, result).result(timeout=30)  # the database is free again
    loaded = store.load("r1")
    assert loaded is not None and loaded.status is RunStatus.COMPLETE
    assert files.result.exists()
    assert [e.type for e in read_events(tmp_path, "r1")] == ["run_started"], "written once"

"""runs.db: append-only checkpoints, leases (expiry, a dead holder, a lost lease), time bounds."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.agent import AgentConfig, RunState, RunStatus, list_runs, read_state
from orchestrator.agent._durable import (
    RUNS_DB,
    LeaseHeld,
    LeaseLost,
    RunStore,
    delta_of,
    new_holder,
)
from orchestrator.errors import InfrastructureError
from orchestrator.testing import json_reply, slow, text

from .conftest import Setup, open_agent


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _state(run_id: str = "r1", messages: int = 2) -> RunState:
    state = RunState(run_id=run_id, goal="g", principal="p", status=RunStatus.EXECUTING)
    for i in range(messages):
        state.append({"role": "user", "content": f"m{i}"}, 3)
    return state


def _rows(path: Path, run_id: str) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT position, message FROM messages WHERE run_id = ? ORDER BY position", (run_id,)
        ).fetchall()


async def _landed(store: RunStore, run_id: str, timeout_s: float = 10.0) -> RunState:
    """The run's first checkpoint, once it is committed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (state := store.load(run_id)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no checkpoint of {run_id}"
        await asyncio.sleep(0.02)
    return state


def test_a_step_appends_its_new_messages_and_a_rewrite_writes_them_all(tmp_path: Path) -> None:
    store = RunStore(tmp_path / RUNS_DB)
    holder = new_holder()
    store.acquire("r1", holder, lease_s=30)
    state = _state()
    delta, written, rewrites = delta_of(state, holder=holder, written=0, rewrites=0)
    store.write(delta)
    state.append({"role": "assistant", "content": "a"}, 1)
    delta, written, rewrites = delta_of(state, holder=holder, written=written, rewrites=rewrites)
    assert delta.start == 2 and len(delta.messages) == 1, "only the new message is sent"
    assert "messages" not in json.loads(delta.state), "the state row leaves the conversation out"
    store.write(delta)
    assert [p for p, _ in _rows(tmp_path / RUNS_DB, "r1")] == [0, 1, 2]
    # A summary replaces older messages: the next checkpoint rewrites the conversation.
    state.messages[0:2] = [{"role": "user", "content": "summary"}]
    state.message_tokens[0:2] = [1]
    state.rewrites += 1
    delta, written, rewrites = delta_of(state, holder=holder, written=written, rewrites=rewrites)
    assert delta.start == 0 and len(delta.messages) == 2
    store.write(delta)
    loaded = store.load("r1")
    assert loaded is not None and loaded.messages == state.messages
    assert loaded.message_tokens == [1, 1] and loaded == state
    assert len(_rows(tmp_path / RUNS_DB, "r1")) == 2, "rows past the end are gone"
    assert read_state(tmp_path, "r1") == state


def test_a_live_holders_lease_is_refused_an_expired_one_is_taken(tmp_path: Path) -> None:
    clock = Clock()
    store = RunStore(tmp_path / RUNS_DB, clock=clock)
    first, second = new_holder(), new_holder()  # one live process, two drivings
    store.acquire("r1", first, lease_s=30)
    with pytest.raises(LeaseHeld, match="being driven by another process"):
        store.acquire("r1", second, lease_s=30)
    clock.now += 20
    assert store.heartbeat("r1", first, lease_s=30)  # renewed: runs until 1050
    clock.now += 20
    with pytest.raises(LeaseHeld):
        store.acquire("r1", second, lease_s=30)
    clock.now += 11  # past the last heartbeat's expiry
    store.acquire("r1", second, lease_s=30)
    assert store.holder("r1") == second
    assert not store.heartbeat("r1", first, lease_s=30), "the old holder learns it lost"
    # The old holder's next checkpoint is refused, whole.
    delta, _, _ = delta_of(_state(), holder=first, written=0, rewrites=0)
    with pytest.raises(LeaseLost):
        store.write(delta)
    assert store.load("r1") is None and _rows(tmp_path / RUNS_DB, "r1") == []


def test_a_dead_processs_lease_is_free_at_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / RUNS_DB)
    # A holder label made by a process that has exited (same boot, its pid and start time).
    code = "from orchestrator.agent._durable import new_holder; print(new_holder())"
    dead = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    store.acquire("r1", dead, lease_s=3600)
    delta, _, _ = delta_of(_state(), holder=dead, written=0, rewrites=0)
    store.write(delta)
    assert [row.run_id for row in store.interrupted()] == ["r1"]
    store.acquire("r1", new_holder(), lease_s=30)
    assert store.interrupted() == []


@pytest.mark.docker
async def test_the_timeout_counts_time_worked_and_the_deadline_counts_downtime(
    setup: Setup,
) -> None:
    store = RunStore(setup.home / RUNS_DB)
    worked = _state("r-worked")
    worked.elapsed_s = 100.0  # worked 100 s before its process stopped
    late = _state("r-late")
    late.deadline_at = 1.0  # long past
    fresh = _state("r-fresh")
    fresh.elapsed_s = 5.0
    fresh.started_at = 1.0  # started long ago: downtime does not count against the timeout
    for state in (worked, late, fresh):
        holder = new_holder()
        store.acquire(state.run_id, holder, lease_s=30)
        store.write(delta_of(state, holder=holder, written=0, rewrites=0)[0])
        store.release(state.run_id, holder)
    setup.server.extend(text("done"), json_reply({"complete": True, "reason": "ok"}))
    async with open_agent(setup.config, AgentConfig(run_timeout_s=60), pools=False) as agent:
        timed_out = await (await agent.resume("r-worked")).result()
        passed = await (await agent.resume("r-late")).result()
        goes_on = await (await agent.resume("r-fresh")).result()
    assert timed_out.status is RunStatus.FAILED
    assert (
        timed_out.reason == "the run timed out after 60 s (run_timeout_s); its calls were cancelled"
    )
    assert passed.status is RunStatus.FAILED and "passed its deadline" in (passed.reason or "")
    assert goes_on.status is RunStatus.COMPLETE and goes_on.duration_s >= 5.0
    assert len(setup.server.chat_requests) == 2, "only the run with time left asked the model"


@pytest.mark.docker
async def test_a_run_whose_lease_is_taken_stops_and_writes_nothing_more(setup: Setup) -> None:
    setup.server.extend(slow(text("too late"), 30))
    async with open_agent(setup.config, AgentConfig(lease_s=1.0), pools=False) as agent:
        handle = agent.start("Answer slowly", run_id="r-taken")
        await asyncio.to_thread(setup.server.wait_for_requests, 1)
        path = setup.home / RUNS_DB
        store = RunStore(path)
        # The planning checkpoint is written in the background, maybe after the
        # model was asked: the state to compare with is the one that landed.
        before = await _landed(store, "r-taken")
        # Another process takes the run over (as after an expiry it would).
        with sqlite3.connect(path) as db:
            db.execute("UPDATE leases SET holder = 'someone-else#1' WHERE run_id = 'r-taken'")
        result = await asyncio.wait_for(handle.result(), 10)
    assert result.status is RunStatus.CANCELLED and "lost the run's lease" in (result.reason or "")
    assert store.load("r-taken") == before, "the state it no longer drives is untouched"
    assert store.holder("r-taken") == "someone-else#1"
    assert not (setup.home / "runs" / "r-taken" / "result.json").exists()


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("json_set(state, '$.version', 2)", "format 2 is newer than this Stockade's (1)"),
        ("json_set(state, '$.added_later', 1)", "added_later"),
        ("'{not json'", "cannot be read"),
    ],
)
def test_a_checkpoint_that_cannot_be_read_is_said_so(
    tmp_path: Path, damage: str, said: str
) -> None:
    # Written by a newer Stockade (a downgrade), or damaged: an error naming the run and
    # why, which the CLI prints and the server logs, never a raw pydantic traceback.
    store = RunStore(tmp_path / RUNS_DB)
    holder = new_holder()
    store.acquire("r1", holder, lease_s=30)
    store.write(delta_of(_state(), holder=holder, written=0, rewrites=0)[0])
    with sqlite3.connect(tmp_path / RUNS_DB) as db:
        db.execute(f"UPDATE runs SET state = {damage} WHERE run_id = 'r1'")
    with pytest.raises(InfrastructureError, match=f"(?s)checkpoint of run r1 .*{re.escape(said)}"):
        store.load("r1")
    with pytest.raises(InfrastructureError, match="cannot be read"):
        read_state(tmp_path, "r1")


def test_one_damaged_checkpoint_leaves_the_other_runs_listed_and_resumable(
    tmp_path: Path,
) -> None:
    """The listing parsed every row's state unguarded: one damaged row made `runs list` a
    traceback and kept a starting server from resuming any interrupted run."""
    store = RunStore(tmp_path / RUNS_DB)
    for run_id in ("good", "bad"):
        holder = new_holder()
        store.acquire(run_id, holder, lease_s=30)
        store.write(delta_of(_state(run_id), holder=holder, written=0, rewrites=0)[0])
        store.release(run_id, holder)
    with sqlite3.connect(tmp_path / RUNS_DB) as db:
        db.execute("UPDATE runs SET state = '{not json' WHERE run_id = 'bad'")
    assert sorted(row.run_id for row in store.interrupted()) == ["bad", "good"]
    listed = {summary.run_id: summary for summary in list_runs(tmp_path)}
    assert set(listed) == {"bad", "good"}
    assert (listed["bad"].goal, listed["bad"].iterations) == (listed["good"].goal, 0)

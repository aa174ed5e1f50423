"""A run's lease at the edges, on the scripted sandbox backend (the subject is the agent's
bookkeeping, not containers): the scripted model server is driven through the real
``openai`` SDK over HTTP, and another process taking the lease over is one row in ``runs.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.agent import (
    Agent,
    AgentConfig,
    AgentEvent,
    RunStatus,
    ToolCallFinished,
    _durable,
)
from orchestrator.agent._durable import RUNS_DB, RunStore
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.testing.model_server import Answer, ChatRequest

from .conftest import allow_all_config

pytestmark = pytest.mark.timeout(60)

_WAIT_S = 30.0


@dataclass
class Held:
    """Answers turn by turn from ``turns``; holds turn ``hold`` until :attr:`release` is set
    (:attr:`arrived` is set when it comes)."""

    turns: list[Answer]
    hold: int
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, request: ChatRequest) -> Answer:
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        if turn == self.hold:
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, _WAIT_S)
        return self.turns[min(turn, len(self.turns) - 1)]


async def test_a_run_that_lost_its_lease_unnoticed_leaves_the_new_holders_run_alone(
    tmp_path: Path,
) -> None:
    # The process is frozen (SIGSTOP, a long pause) past its lease while the model
    # thinks; another process resumes the run; then the frozen one wakes to a final
    # answer before its heartbeat has noticed. Ending "its" run must not delete the
    # workspace, forget the model budget or claim an end the new holder's run never had.
    brain = Held(
        turns=[tool_calls(tool_call("files__write", {"path": "a.txt", "content": "A"})),
               text("done")],
        hold=1,
    )  # fmt: skip
    home = tmp_path / "state"
    async with ScriptedModelServer(handler=brain) as server:
        config = allow_all_config(home, server.base_url)
        settings = AgentConfig(reflection=False, keep_workspace=False)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, settings) as agent,
        ):
            handle = agent.start("Write a.txt", run_id="r-frozen")
            try:
                assert await asyncio.to_thread(brain.arrived.wait, _WAIT_S)
                assert (home / "workspaces" / "r-frozen").is_dir()
                with sqlite3.connect(home / RUNS_DB) as db:
                    db.execute(
                        "UPDATE leases SET holder = 'other-host/1/1#1' WHERE run_id = 'r-frozen'"
                    )
            finally:
                brain.release.set()
            result = await asyncio.wait_for(handle.result(), _WAIT_S)
            calls = platform.gateway.model_budget("r-frozen").calls
    assert result.status is RunStatus.CANCELLED, result
    assert "lost the run's lease" in (result.reason or "")
    assert (home / "workspaces" / "r-frozen").is_dir(), "the new holder's workspace was deleted"
    assert calls >= 2, "the new holder's model budget was forgotten"
    assert not (home / "runs" / "r-frozen" / "result.json").exists()
    state = RunStore(home / RUNS_DB).load("r-frozen")
    assert state is not None and not state.status.finished


def _lease_held_elsewhere(home: Path, run_id: str, *, expires_in_s: float) -> None:
    """A lease row as another host's process leaves it (an owner this host cannot check)."""
    store = RunStore(home / RUNS_DB)
    holder = "other-boot/4242/99#feedbeef"
    store.acquire(run_id, holder, lease_s=expires_in_s)
    store.close_thread_connection()


async def test_a_new_run_whose_lease_another_process_holds_ends_without_starting(
    tmp_path: Path,
) -> None:
    """Two processes start one new run id at once; the one that lost the race to the lease
    must neither raise out of Agent.run nor write over the winner's run."""
    home = tmp_path / "state"
    async with ScriptedModelServer([text("done")]) as server:
        config = allow_all_config(home, server.base_url)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(reflection=False)) as agent,
        ):
            _lease_held_elsewhere(home, "r-raced", expires_in_s=600)
            events: list[AgentEvent] = []
            result = await asyncio.wait_for(
                agent.run("g", run_id="r-raced", on_event=events.append), _WAIT_S
            )
        requests = len(server.chat_requests)
    assert result.status is RunStatus.CANCELLED and not result.success
    assert "r-raced is being driven by another process" in (result.reason or "")
    assert "this process did not start it" in (result.reason or "")
    assert [(e.type, getattr(e, "reason", None)) for e in events] == [
        ("run_finished", result.reason)
    ]
    assert requests == 0, "the model was asked"
    assert not (home / "runs" / "r-raced").exists(), "the winner's run files were written"
    store = RunStore(home / RUNS_DB)
    assert not store.exists("r-raced") and store.holder("r-raced") == "other-boot/4242/99#feedbeef"


async def test_a_new_run_whose_lease_cannot_be_written_fails_without_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "state"
    monkeypatch.setattr(_durable, "LOCK_WAIT_S", 0.2)  # runs.db locked longer than that
    async with ScriptedModelServer([text("done")]) as server:
        config = allow_all_config(home, server.base_url)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(reflection=False)) as agent,
        ):
            with closing(sqlite3.connect(home / RUNS_DB, isolation_level=None)) as locker:
                locker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
                result = await asyncio.wait_for(agent.run("g", run_id="r-locked"), _WAIT_S)
                locker.execute("ROLLBACK")
        requests = len(server.chat_requests)
    assert result.status is RunStatus.FAILED
    assert (result.reason or "").startswith("the run's lease could not be taken, so it did not")
    assert "database is locked" in (result.reason or "")
    assert requests == 0
    assert not RunStore(home / RUNS_DB).exists("r-locked")


async def test_calls_whose_checkpoint_cannot_be_written_do_not_go_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs.db is locked (past the lock wait) while the model's turn asks for a call: the
    checkpoint naming it cannot be written, so the call must not run (a kill would lose
    the knowledge that it may have run); the run fails saying so."""
    home = tmp_path / "state"
    monkeypatch.setattr(_durable, "LOCK_WAIT_S", 0.3)
    locker: list[sqlite3.Connection] = []

    def lock_then_ask(request: ChatRequest) -> Answer:
        if not any(m.get("role") == "assistant" for m in request.messages):
            # Another writer takes runs.db's write lock as the model answers.
            db = sqlite3.connect(home / RUNS_DB, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN IMMEDIATE")
            locker.append(db)
            return tool_calls(tool_call("files__write", {"path": "a.txt", "content": "A"}))
        return text("done")

    def unlock_once_answered(event: AgentEvent) -> None:
        # The call is answered without running: the other writer lets go, so the end of
        # the run can be recorded.
        if isinstance(event, ToolCallFinished) and locker:
            locker.pop().execute("ROLLBACK")

    async with ScriptedModelServer(handler=lock_then_ask) as server:
        config = allow_all_config(home, server.base_url)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(reflection=False)) as agent,
        ):
            result = await asyncio.wait_for(
                agent.run("Write a.txt", run_id="r-unwritten", on_event=unlock_once_answered),
                _WAIT_S,
            )
        requests = len(server.chat_requests)
    reason = result.reason or ""
    assert result.status is RunStatus.FAILED, result
    assert reason.startswith(
        "the run's checkpoint naming the tool calls about to run could not be written ("
    )
    assert "database is locked), so none was run" in reason
    assert result.tool_calls == {"skipped": 1} and requests == 1
    assert not (home / "workspaces" / "r-unwritten" / "a.txt").exists(), "the call ran"
    audited = config.audit_path.read_text() if config.audit_path.exists() else ""
    assert "r-unwritten" not in audited, "the call reached the gateway"
    state = RunStore(home / RUNS_DB).load("r-unwritten")
    assert state is not None and state.status is RunStatus.FAILED and state.in_flight == []
    asked, answered = state.messages[-2:]  # the call, answered once, without running
    assert [call["id"] for call in asked["tool_calls"]] == [answered["tool_call_id"]]
    assert answered["content"].startswith("[skipped]\nthe run's checkpoint naming the tool")


async def test_a_finished_runs_workspace_is_deleted_off_the_event_loop(tmp_path: Path) -> None:
    """Deleting a workspace of thousands of files must not stall the loop other runs share."""
    home = tmp_path / "state"
    closed_on: list[threading.Thread] = []
    async with ScriptedModelServer([text("done")]) as server:
        config = allow_all_config(home, server.base_url)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(reflection=False)) as agent,
        ):
            workspaces = platform.workspaces
            close = workspaces.close

            def watched(run_id: str, *, keep: bool = False) -> None:
                closed_on.append(threading.current_thread())
                close(run_id, keep=keep)

            workspaces.close = watched  # type: ignore[method-assign]
            result = await asyncio.wait_for(agent.run("g", run_id="r-big"), _WAIT_S)
    assert result.status is RunStatus.COMPLETE, result
    assert closed_on and threading.main_thread() not in closed_on
    assert not (home / "workspaces" / "r-big").exists()

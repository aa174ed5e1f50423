"""A run's lease at the edges, on the scripted sandbox backend (the subject is the agent's
bookkeeping, not containers): the scripted model server is driven through the real
``openai`` SDK over HTTP, and another process taking the lease over is one row in ``runs.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.agent import Agent, AgentConfig, RunStatus
from orchestrator.agent._durable import RUNS_DB, RunStore
from orchestrator.config import StockadeConfig
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.testing.model_server import Answer, ChatRequest

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


def _config(home: Path, base_url: str) -> StockadeConfig:
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "policy.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    return StockadeConfig.model_validate(
        {
            "state_dir": home,
            "policy": policy,
            "toolkits": ["toolkits.files"],
            "model": {"base_url": base_url, "name": "test-model"},
        }
    )


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
        config = _config(home, server.base_url)
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

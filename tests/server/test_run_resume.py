"""The server resumes interrupted runs: at its start, and, for a run whose lease a process
this host cannot check holds (another boot, another host), when that lease expires.

The scripted sandbox backend and the scripted model server (the real ``openai`` SDK);
the other process is a lease row in ``runs.db``, renewed or not as that process would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI

from orchestrator.agent import AgentConfig, RunState, RunStatus, read_state
from orchestrator.agent._durable import RUNS_DB, RunStore, delta_of
from orchestrator.errors import NotFoundError
from orchestrator.server import create_app
from orchestrator.testing import ScriptedModelServer, text
from orchestrator.testing.backend import ScriptedBackend

from .test_runs_api import model_config

pytestmark = pytest.mark.timeout(60)

_WAIT_S = 20.0
_ELSEWHERE = "other-boot/4242/99#feedbeef"
"""A holder of another boot of this host: whether it is alive cannot be checked here."""


def interrupted_run(home: Path, run_id: str, *, lease_s: float) -> float:
    """A run checkpointed after its first step, whose lease :data:`_ELSEWHERE` holds for
    ``lease_s``; the lease's expiry, as ``time.monotonic()`` reads it."""
    store = RunStore(home / RUNS_DB)
    state = RunState(run_id=run_id, goal="g", principal="alice", status=RunStatus.PLANNING,
                     started_at=time.time())  # fmt: skip
    state.append({"role": "system", "content": "You are a test."}, 5)
    state.append({"role": "user", "content": "g"}, 1)
    store.write(delta_of(state, holder=None, written=0, rewrites=0)[0])
    store.acquire(run_id, _ELSEWHERE, lease_s=lease_s)
    expires = time.monotonic() + lease_s
    store.close_thread_connection()
    return expires


@asynccontextmanager
async def started(home: Path, model: ScriptedModelServer) -> AsyncIterator[FastAPI]:
    """The server's lifespan (no HTTP needed): start, then shutdown at the block's end."""
    config = model_config(home, model.base_url)
    app = create_app(config, backend=ScriptedBackend(), agent=AgentConfig(reflection=False))
    async with app.router.lifespan_context(app):
        yield app


async def ended(home: Path, run_id: str) -> RunState:
    """The run's checkpoint once it has ended (bounded wait)."""
    async with asyncio.timeout(_WAIT_S):
        while True:
            try:
                state = await asyncio.to_thread(read_state, home, run_id)
            except NotFoundError:
                state = None
            if state is not None and state.status.finished:
                return state
            await asyncio.sleep(0.05)


async def test_a_run_held_by_another_boot_is_resumed_when_its_lease_expires(
    tmp_path: Path,
) -> None:
    home = tmp_path / "state"
    home.mkdir()
    expires = interrupted_run(home, "r-reboot", lease_s=1.5)
    async with ScriptedModelServer([text("done")]) as model, started(home, model) as app:
        runs = app.state.stockade.runs
        assert runs.handle("r-reboot") is None, "resumed under a lease still held"
        state = await ended(home, "r-reboot")
        asked = model.chat_requests
    assert (state.status, state.answer, state.resumes) == (RunStatus.COMPLETE, "done", 1)
    assert len(asked) == 1 and asked[0].received_at >= expires, "asked before the expiry"
    assert RunStore(home / RUNS_DB).holder("r-reboot") is None  # released at its end


async def test_a_renewed_lease_is_waited_for_again(tmp_path: Path) -> None:
    """The process elsewhere is alive and heartbeats: the run is left to it; once it stops
    renewing the lease (it died), the run is resumed at the lease's last expiry."""
    home = tmp_path / "state"
    home.mkdir()
    lease_s = 1.5
    interrupted_run(home, "r-alive", lease_s=lease_s)
    store = RunStore(home / RUNS_DB)
    async with ScriptedModelServer([text("done")]) as model, started(home, model):
        for _ in range(5):  # its heartbeats (a fifth of the lease apart: slack for a slow VM)
            beat = time.monotonic()
            assert await asyncio.to_thread(store.heartbeat, "r-alive", _ELSEWHERE, lease_s=lease_s)
            await asyncio.sleep(lease_s / 5)
        assert model.chat_requests == [], "resumed while its holder renewed the lease"
        state = await ended(home, "r-alive")
        asked = model.chat_requests
    assert (state.status, state.resumes) == (RunStatus.COMPLETE, 1)
    assert len(asked) == 1 and asked[0].received_at >= beat + lease_s, "asked before the expiry"


async def test_shutdown_cancels_the_timers(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir()
    interrupted_run(home, "r-later", lease_s=600)

    def timers() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "runs:lease-expiry:r-later"]

    async with ScriptedModelServer([text("done")]) as model:
        async with started(home, model):
            assert [t.done() for t in timers()] == [False]
            waiting = timers()
        assert timers() == [] and all(t.cancelled() for t in waiting)
        assert model.chat_requests == []
    assert RunStore(home / RUNS_DB).holder("r-later") == _ELSEWHERE  # left to its holder

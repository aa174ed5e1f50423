"""Durable runs (issue 16, point 1): the orchestrator is SIGKILLed, ``stockade runs resume`` goes on.

Each test runs ``stockade run`` in a subprocess against the scripted model
server (the real ``openai`` SDK on the other side), tool calls in real
containers, and kills it with SIGKILL at a point found deterministically: a
model request the server holds until the kill, an audit ``intent`` record (a
call about to take its sandbox), a pending approval request in the database.
The model's answers depend only on the conversation it is sent, so the
resumed run gets the same answers. After the resume: the run completed, every
``tool_call_id`` is answered exactly once, no non-idempotent call has more
than one intent in the audit log, no container of a killed process is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.agent import RunStatus, read_state
from orchestrator.approvals import ApprovalStore
from orchestrator.config import load_config
from orchestrator.server import create_app
from orchestrator.testing import ScriptedModelServer, json_reply, text, tool_call, tool_calls
from orchestrator.testing.model_server import Answer, ChatRequest

from .conftest import TEST_POLICY, Setup, containers_of, write_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

_WAIT_S = 60.0
_IDEMPOTENT = {"files.read", "files.list", "files.search"}


@dataclass
class Brain:
    """Answers a turn by the number of model turns in the conversation; reflections say done.

    ``hold`` names one request to keep unanswered (``("turn", n)`` or ``("reflection", 0)``)
    until :attr:`release` is set: :attr:`arrived` is set when it comes.
    """

    turns: list[Answer]
    hold: tuple[str, int] | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, request: ChatRequest) -> Answer:
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        kind = "reflection" if request.json_mode else "turn"
        key = (kind, 0 if kind == "reflection" else turn)
        self.seen.append(key)
        if key == self.hold and not self.arrived.is_set():
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, _WAIT_S)
        if kind == "reflection":
            return json_reply({"complete": True, "reason": "done"})
        return self.turns[min(turn, len(self.turns) - 1)]


@dataclass
class Durable:
    """A test's platform files, its scripted model (answering through ``brain``)."""

    setup: Setup
    brain: Brain


@pytest.fixture
async def durable(tmp_path: Path, images: object, no_leaks: None) -> AsyncIterator[Durable]:
    brain = Brain(turns=[])
    async with ScriptedModelServer(handler=brain) as server:
        config = write_config(tmp_path, server.base_url, policy=TEST_POLICY)
        yield Durable(setup=Setup(home=tmp_path, server=server, config=config), brain=brain)
        brain.release.set()  # a request still held goes (to a killed client)


def _env(setup: Setup) -> dict[str, str]:
    return {**os.environ, "STOCKADE_HOME": str(setup.home), "STOCKADE_CONFIG": str(setup.config)}


def start(setup: Setup, *args: str) -> subprocess.Popen[str]:
    """``stockade ARGS`` in a subprocess (no terminal: nobody is asked at a prompt)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args, "--no-prompt"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(setup),
    )


def stockade(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """``stockade ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(setup),
    )


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL: no clean-up of any kind runs."""
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=180)
    return process.returncode, out, err


def resume(setup: Setup, run_id: str) -> tuple[int, dict[str, Any], str]:
    """``stockade runs resume RUN_ID --json`` to its end: exit code, result, progress."""
    process = start(setup, "runs", "resume", run_id, "--json")
    code, out, err = finish(process)
    return code, (json.loads(out) if out.strip() else {}), err


def wait_until(what: str, check: Callable[[], Any]) -> Any:
    """Wait (bounded) for an observable transition; no fixed sleeps."""
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def checkpoint(setup: Setup, run_id: str) -> dict[str, Any] | None:
    """The run's state row in runs.db, as committed (None before the first)."""
    path = setup.home / "runs.db"
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def answered_once(messages: list[dict[str, Any]]) -> None:
    """Every tool call of every assistant message has exactly one tool message, and no other
    tool message exists."""
    asked = [c["id"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert sorted(asked) == sorted(answered), (asked, answered)
    assert len(set(asked)) == len(asked)


def no_double_execution(setup: Setup, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """At most one intent per non-idempotent call of the run; the intents by call id."""
    intents: dict[str, list[dict[str, Any]]] = {}
    for record in setup.audit("intent"):
        if record.get("run_id") == run_id:
            intents.setdefault(record["call_id"], []).append(record)
    for call_id, records in intents.items():
        if records[0]["tool"] not in _IDEMPOTENT:
            assert len(records) == 1, f"{records[0]['tool']} call {call_id} ran twice"
    return intents


@pytest.fixture
def docker_engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def no_containers_of(client: docker.DockerClient, *processes: subprocess.Popen[str]) -> None:
    for process in processes:
        assert containers_of(client, process.pid) == [], f"containers of {process.pid} left"


def tool_text(messages: list[dict[str, Any]], tool_call_id: str) -> str:
    return next(
        str(m["content"])
        for m in messages
        if m["role"] == "tool" and m["tool_call_id"] == tool_call_id
    )


def call_ids(setup: Setup, run_id: str) -> dict[str, str]:
    """Stockade's call id → the model's id, from the run's log (the audit knows the first,
    the conversation the second)."""
    log = setup.home / "runs" / run_id / "log.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {e["call_id"]: e["model_id"] for e in events if e["type"] == "tool_call_finished"}


class StderrLines:
    """A subprocess's standard error, line by line as it comes (read on a thread)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._stream = process.stderr
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        """Everything, once the process has closed it."""
        self._thread.join(30)
        self._stream.close()
        return "".join(self.lines)


def _writes(brain: Brain) -> None:
    brain.turns = [
        tool_calls(tool_call("files__write", {"path": "a.txt", "content": "A"})),
        tool_calls(tool_call("files__write", {"path": "b.txt", "content": "B"})),
        text("Both files are written."),
    ]


@pytest.mark.parametrize("point", ["before_first_model_call", "between_iterations"])
def test_killed_before_a_model_call_the_resumed_run_completes(
    durable: Durable, docker_engine: docker.DockerClient, point: str
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.hold = ("turn", 0) if point == "before_first_model_call" else ("turn", 1)
    _writes(brain)
    run_id = f"r-{point}"
    first = start(setup, "run", "Write a.txt, then b.txt", "--run-id", run_id)
    try:
        assert brain.arrived.wait(_WAIT_S), "the held model request never came"
        if point == "between_iterations":
            # Iteration 1 is committed (its call answered) before the kill.
            wait_until(
                "iteration 1 committed",
                lambda: (c := checkpoint(setup, run_id)) and c["iteration"] == 1
                and not c["in_flight"] and c["tool_calls"].get("ok") == 1,
            )  # fmt: skip
        else:
            wait_until("the plan committed", lambda: checkpoint(setup, run_id))
        kill(first)
    finally:
        brain.release.set()
        if first.poll() is None:
            kill(first)
    code, result, err = resume(setup, run_id)
    assert code == 0, err
    assert result["status"] == "complete" and result["answer"] == "Both files are written."
    state = read_state(setup.home, run_id)
    answered_once(state.messages)
    intents = no_double_execution(setup, run_id)
    assert sorted(r[0]["arguments"]["path"] for r in intents.values()) == ["a.txt", "b.txt"]
    assert (setup.home / "workspaces" / run_id / "b.txt").read_text() == "B"
    assert state.resumes == 1
    no_containers_of(docker_engine, first)


def test_killed_during_a_tool_call_it_is_not_run_again_and_the_model_is_told(
    durable: Durable, docker_engine: docker.DockerClient
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.turns = [
        tool_calls(
            tool_call("shell__run", {"command": "sleep 15; echo done > slow.txt"}),
            tool_call("files__read", {"path": "notes.txt"}),
        ),
        text("The slow command was interrupted; I checked."),
    ]
    (setup.home / "workspaces" / "r-tool").mkdir(parents=True)
    (setup.home / "workspaces" / "r-tool" / "notes.txt").write_text("read me")
    first = start(setup, "run", "Run the slow command and read notes", "--run-id", "r-tool")
    try:
        # Both calls are about to run: their intents are durable. Calls of one run take
        # turns on its workspace, so one of them at least is still under way at the kill
        # (the shell call sleeps for 15 s), whichever went first.
        wait_until(
            "both calls' intents",
            lambda: {r["tool"] for r in setup.audit("intent")} == {"shell.run", "files.read"},
        )
        kill(first)
    finally:
        if first.poll() is None:
            kill(first)
    code, result, err = resume(setup, "r-tool")
    assert code == 0, err
    assert result["status"] == "complete"
    state = read_state(setup.home, "r-tool")
    answered_once(state.messages)
    intents = no_double_execution(setup, "r-tool")
    shell = next(c for c, r in intents.items() if r[0]["tool"] == "shell.run")
    read = next(c for c, r in intents.items() if r[0]["tool"] == "files.read")
    # Never run again: one intent, no outcome; the model reads that its effects are unknown.
    assert not [r for r in setup.audit("call") if r["call_id"] == shell]
    assert len(intents[read]) == 2, "the idempotent read ran again"
    calls = call_ids(setup, "r-tool")
    said = tool_text(state.messages, calls[shell])
    assert said.startswith("[interrupted]") and "effects are unknown" in said
    assert json.loads(tool_text(state.messages, calls[read]))["content"] == "read me"
    assert not (setup.home / "workspaces" / "r-tool" / "slow.txt").exists()
    assert state.tool_calls == {"interrupted": 1, "ok": 1}
    # The model saw the interruption in the conversation it was sent.
    assert any("[interrupted]" in json.dumps(r.messages) for r in setup.server.chat_requests)
    no_containers_of(docker_engine, first)


def test_killed_during_reflection_the_resumed_run_completes(
    durable: Durable, docker_engine: docker.DockerClient
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.hold = ("reflection", 0)
    _writes(brain)
    first = start(setup, "run", "Write a.txt, then b.txt", "--run-id", "r-reflect")
    try:
        assert brain.arrived.wait(_WAIT_S), "the reflection never came"
        kill(first)
    finally:
        brain.release.set()
        if first.poll() is None:
            kill(first)
    # Readers see it as interrupted, from its checkpoint in runs.db.
    listed = json.loads(stockade(setup, "runs", "list", "--json").stdout)
    assert [(r["run_id"], r["status"], r["iterations"]) for r in listed] == [
        ("r-reflect", "executing", 2)
    ]
    assert listed[0]["outcome"].startswith("(interrupted")
    shown = stockade(setup, "runs", "show", "r-reflect")
    assert shown.returncode == 1 and "stockade runs resume r-reflect" in shown.stdout
    code, result, err = resume(setup, "r-reflect")
    assert code == 0, err
    assert result["status"] == "complete" and result["reflections"] == 1
    state = read_state(setup.home, "r-reflect")
    answered_once(state.messages)
    no_double_execution(setup, "r-reflect")
    assert brain.seen.count(("reflection", 0)) == 2  # asked again after the resume
    no_containers_of(docker_engine, first)


def _pending(setup: Setup, run_id: str) -> str | None:
    store = ApprovalStore(setup.home / "approvals.db")
    return next((r.id for r in store.find() if r.run_id == run_id), None)


@pytest.mark.parametrize("decided", ["while_down", "after_restart"])
def test_killed_while_waiting_for_an_approval_the_decision_applies(
    durable: Durable, docker_engine: docker.DockerClient, decided: str
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.turns = [
        tool_calls(tool_call("files__write", {"path": "old.txt", "content": "x"})),
        tool_calls(tool_call("files__delete", {"path": "old.txt"})),
        text("old.txt is deleted."),
    ]
    run_id = f"r-approval-{decided}"
    first = start(setup, "run", "Write old.txt, then delete it", "--run-id", run_id)
    try:
        request_id = wait_until("the approval request", lambda: _pending(setup, run_id))
        kill(first)
    finally:
        if first.poll() is None:
            kill(first)
    store = ApprovalStore(setup.home / "approvals.db")
    if decided == "while_down":
        assert store.decide(request_id, approve=True, by="ada")
        code, result, err = resume(setup, run_id)
    else:
        second = start(setup, "runs", "resume", run_id, "--json")
        progress = StderrLines(second)
        # The resumed run waits on the same request (no second one is made).
        wait_until("the resumed run waiting", lambda: request_id in "".join(progress.lines))
        assert [r.id for r in store.find() if r.run_id == run_id] == [request_id]
        assert store.decide(request_id, approve=True, by="ada")
        assert second.stdout is not None
        with second.stdout:
            out = second.stdout.read()  # to its end; stderr is the reader thread's
        code, err = second.wait(timeout=180), progress.text()
        result = json.loads(out) if out.strip() else {}
    assert code == 0, err
    assert result["status"] == "complete", result
    state = read_state(setup.home, run_id)
    answered_once(state.messages)
    no_double_execution(setup, run_id)
    assert not (setup.home / "workspaces" / run_id / "old.txt").exists()
    deletes = [
        r for r in setup.audit("call") if r["run_id"] == run_id and r["tool"] == "files.delete"
    ]
    assert [r["status"] for r in deletes] == ["ok"]
    assert deletes[0]["approval"]["request_id"] == request_id
    no_containers_of(docker_engine, first)


def test_two_processes_never_drive_one_run(
    durable: Durable, docker_engine: docker.DockerClient
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.hold = ("turn", 1)
    _writes(brain)
    first = start(setup, "run", "Write a.txt, then b.txt", "--run-id", "r-two")
    try:
        assert brain.arrived.wait(_WAIT_S)
        kill(first)
    finally:
        if first.poll() is None:
            kill(first)
    # Two resumes on the same state directory: the first holds the run (its model request
    # is held), the second is refused; then the first finishes alone.
    brain.arrived.clear()
    brain.release.clear()
    brain.hold = ("turn", 1)
    winner = start(setup, "runs", "resume", "r-two", "--json")
    try:
        assert brain.arrived.wait(_WAIT_S), "the first resume never asked the model"
        asked = len(setup.server.chat_requests)
        loser = start(setup, "runs", "resume", "r-two", "--json")
        code, out, err = finish(loser)
        assert code == 2, (code, out, err)
        assert "being driven by another process" in err
        assert len(setup.server.chat_requests) == asked, "the refused process asked the model"
    finally:
        brain.release.set()
    code, out, err = finish(winner)
    assert code == 0, err
    assert json.loads(out)["status"] == "complete"
    state = read_state(setup.home, "r-two")
    answered_once(state.messages)
    no_double_execution(setup, "r-two")
    no_containers_of(docker_engine, first, winner, loser)


async def test_the_server_resumes_interrupted_runs_and_suspends_its_own_at_shutdown(
    durable: Durable, docker_engine: docker.DockerClient
) -> None:
    setup, brain = durable.setup, durable.brain
    brain.hold = ("turn", 1)
    _writes(brain)
    first = start(setup, "run", "Write a.txt, then b.txt", "--run-id", "r-serve")
    try:
        assert await asyncio.to_thread(brain.arrived.wait, _WAIT_S)
        kill(first)
    finally:
        if first.poll() is None:
            kill(first)
    loaded = load_config(setup.config, environ={})
    # A server starts on the state directory (server.resume_runs: true by default) and
    # resumes the run; it is redeployed while the run waits for its model: the run is
    # suspended, not cancelled, and the next start finishes it.
    brain.arrived.clear()
    brain.hold = ("turn", 2)
    app = create_app(loaded)
    async with app.router.lifespan_context(app):
        handle = app.state.stockade.runs.handle("r-serve")
        assert handle is not None, "the interrupted run was not resumed at start"
        assert await asyncio.to_thread(brain.arrived.wait, _WAIT_S)
    assert handle.done()
    suspended = read_state(setup.home, "r-serve")
    assert suspended.status is RunStatus.EXECUTING and suspended.iteration == 2
    assert (setup.home / "workspaces" / "r-serve" / "b.txt").read_text() == "B"
    brain.release.set()
    app = create_app(loaded)
    async with app.router.lifespan_context(app):
        handle = app.state.stockade.runs.handle("r-serve")
        assert handle is not None
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status is RunStatus.COMPLETE and result.answer == "Both files are written."
    state = read_state(setup.home, "r-serve")
    answered_once(state.messages)
    no_double_execution(setup, "r-serve")
    assert state.resumes == 2 and state.iteration == 3
    no_containers_of(docker_engine, first)

"""Single-use approvals across real orchestrator processes sharing one approval database.

The finding: under the default policy, ``stockade tools call shell.run`` with
``rm -rf ./x`` waited for approval and ran once approved; the same command
run again later ran at once, because the old decision was found again by
(run, call id, tool, arguments) and the CLI's call id is always ``cli``.
Here each orchestrator is an OS process of its own with a gateway over the
scripted sandbox, replaying exactly that call with that same call id; the
test process plays the human deciding (through ``stockade approvals`` too).

An orchestrator's approver reports every request it is asked about and
abstains, so the test sees each wait begin without sleeping; every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Iterator
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore
from orchestrator.cli.approvals import approvals
from orchestrator.tools import ToolCall

from .conftest import Harness

_WAIT_S = 60.0
_DEFAULT_POLICY = Path(__file__).parents[2] / "policies" / "default.yaml"
# The CLI's call, word for word: run named after the --workspace directory, call id "cli".
_RM = {"command": "rm -rf ./x"}


def _orchestrator(root: str, events: Queue[tuple[Any, ...]]) -> None:
    """One orchestrator process: replays the CLI's call through its own gateway."""

    async def report_and_abstain(request: ApprovalRequest, /) -> None:
        events.put(("asked", request.id))

    h = Harness(Path(root), approvers=[report_and_abstain], policy=_DEFAULT_POLICY.read_text())
    call = ToolCall(id="cli", name="shell.run", arguments=_RM, run_id="ws", principal="ada")
    result = asyncio.run(h.gateway.call(call))
    events.put(("done", result.status.value, len(h.backend.requests)))


class Orchestrators:
    """Starts orchestrator processes on one state directory and reads what they report."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = ApprovalStore(root / "approvals.db")
        self._context: SpawnContext = multiprocessing.get_context("spawn")
        self._running: list[SpawnProcess] = []

    def start(self) -> tuple[SpawnProcess, Queue[tuple[Any, ...]]]:
        events: Queue[tuple[Any, ...]] = self._context.Queue()
        process = self._context.Process(target=_orchestrator, args=(str(self.root), events))
        process.start()
        self._running.append(process)
        return process, events

    @staticmethod
    def next(events: Queue[tuple[Any, ...]]) -> tuple[Any, ...]:
        return events.get(timeout=_WAIT_S)

    def asked(self, events: Queue[tuple[Any, ...]]) -> str:
        event = self.next(events)
        assert event[0] == "asked", f"the call did not ask for approval: {event}"
        return str(event[1])

    def finished(self, process: SpawnProcess, events: Queue[tuple[Any, ...]]) -> tuple[str, int]:
        kind, status, executions = self.next(events)
        assert kind == "done"
        process.join(timeout=_WAIT_S)
        assert process.exitcode == 0
        return status, executions

    def request(self, request_id: str) -> ApprovalRequest:
        found = self.store.get(request_id)
        assert found is not None
        return found

    def call_records(self) -> list[dict[str, Any]]:
        """The audit log every process appended to: one record per finished call."""
        lines = (self.root / "audit.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == "call"]

    def stop(self) -> None:
        for process in self._running:
            if process.is_alive():
                process.kill()
            process.join(timeout=_WAIT_S)


@pytest.fixture
def orchestrators(tmp_path: Path) -> Iterator[Orchestrators]:
    """Orchestrator processes sharing ``tmp_path``; none outlives the test."""
    started = Orchestrators(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def approve(db: Path, request_id: str) -> None:
    """What the human types in another terminal."""
    result = CliRunner().invoke(approvals, ["approve", request_id, "--db", str(db)])
    assert result.exit_code == 0, result.output


def test_the_same_command_later_asks_again(orchestrators: Orchestrators) -> None:
    first, first_events = orchestrators.start()
    approved_id = orchestrators.asked(first_events)
    approve(orchestrators.store.path, approved_id)
    assert orchestrators.finished(first, first_events) == ("ok", 1)

    later, later_events = orchestrators.start()  # the same command, run again later
    asked_id = orchestrators.asked(later_events)
    assert asked_id != approved_id, "a new request: the old decision was used up"
    used = orchestrators.request(approved_id)
    assert (used.status, used.consumed_by) == (ApprovalStatus.APPROVED, "cli")
    assert orchestrators.request(asked_id).status is ApprovalStatus.PENDING
    assert orchestrators.store.decide(asked_id, approve=False, by="ops")
    assert orchestrators.finished(later, later_events) == ("approval_denied", 0)

    records = orchestrators.call_records()
    assert [(r["status"], r["approval"]["request_id"]) for r in records] == [
        ("ok", approved_id),
        ("approval_denied", asked_id),
    ]
    assert records[0]["approval"]["scope"] == "once"


@pytest.mark.parametrize("attempt", range(2))
def test_two_processes_waiting_on_one_decision_one_runs_the_other_asks_again(
    orchestrators: Orchestrators, attempt: int
) -> None:
    first, first_events = orchestrators.start()
    shared_id = orchestrators.asked(first_events)
    second, second_events = orchestrators.start()
    assert orchestrators.asked(second_events) == shared_id, "both wait on the one request"

    assert orchestrators.store.decide(shared_id, approve=True, by="ops")
    # Both see the approval; one consumes it and runs, the other asks again.
    outcomes = {"first": orchestrators.next(first_events)}
    loser = "second" if outcomes["first"][0] == "done" else "first"
    outcomes["second"] = orchestrators.next(second_events)
    assert sorted(kind for kind, *_ in outcomes.values()) == ["asked", "done"]
    assert outcomes["first" if loser == "second" else "second"][1:] == ("ok", 1)
    again_id = outcomes[loser][1]
    assert again_id != shared_id

    assert orchestrators.store.decide(again_id, approve=True, by="ops")
    process, events = (first, first_events) if loser == "first" else (second, second_events)
    assert orchestrators.finished(process, events) == ("ok", 1)
    winner = second if loser == "first" else first
    winner.join(timeout=_WAIT_S)
    assert winner.exitcode == 0

    # Each decision authorised exactly one execution, recorded with the call that used it.
    for request_id in (shared_id, again_id):
        used = orchestrators.request(request_id)
        assert used.consumed_by == "cli" and used.consumed_at is not None
    assert len(orchestrators.store.find(None)) == 2
    records = orchestrators.call_records()
    assert sorted(r["approval"]["request_id"] for r in records) == sorted([shared_id, again_id])
    assert {r["status"] for r in records} == {"ok"}


def test_a_restart_while_pending_resumes_once(orchestrators: Orchestrators) -> None:
    crashed, crashed_events = orchestrators.start()
    request_id = orchestrators.asked(crashed_events)
    crashed.kill()  # the orchestrator dies while its call waits
    crashed.join(timeout=_WAIT_S)
    approve(orchestrators.store.path, request_id)  # decided while nobody waits

    resumed, resumed_events = orchestrators.start()  # the replayed call finds its decision
    assert orchestrators.finished(resumed, resumed_events) == ("ok", 1), "nobody asked again"
    assert orchestrators.request(request_id).consumed_by == "cli"

    replayed, replayed_events = orchestrators.start()  # and it was used up
    asked_id = orchestrators.asked(replayed_events)
    assert asked_id != request_id
    assert orchestrators.store.decide(asked_id, approve=False, by="ops")
    assert orchestrators.finished(replayed, replayed_events) == ("approval_denied", 0)
    records = orchestrators.call_records()
    assert [r["approval"]["request_id"] for r in records] == [request_id, asked_id]

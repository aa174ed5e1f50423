"""Calls that need approval: approve, deny, edit, timeout, decisions from elsewhere, restarts,
single use (an identical later call asks again) and grants for the rest of a run."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable

import pytest

from orchestrator.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalScope,
    ApprovalStatus,
    ApprovalStore,
    AutoApprovalRule,
    AutoApprover,
    TerminalApprover,
)
from orchestrator.tools import ToolCall, ToolStatus

from .conftest import POLICY, Harness

Build = Callable[..., Harness]


def delete(path: str = "old.log", call_id: str = "c1", run_id: str = "run-1") -> ToolCall:
    return ToolCall(
        id=call_id, name="files.delete", arguments={"path": path}, run_id=run_id, principal="bob"
    )


def auto(decision: str, note: str | None = None) -> AutoApprover:
    rule = {"name": "ops", "tools": "files.delete", "decision": decision, "note": note}
    return AutoApprover([AutoApprovalRule.model_validate(rule)])


def editor(arguments: dict[str, object]) -> Callable[[ApprovalRequest], object]:
    async def approve_with_edit(request: ApprovalRequest, /) -> ApprovalDecision:
        return ApprovalDecision(approved=True, by="carol", arguments=arguments)

    return approve_with_edit


def sent_arguments(h: Harness) -> list[dict[str, object]]:
    return [json.loads(request.stdin) for request, _ in h.backend.requests]


async def pending(store: ApprovalStore) -> ApprovalRequest:
    async with asyncio.timeout(10):
        while not (found := store.find()):
            await asyncio.sleep(0.01)
    return found[0]


async def test_an_approved_call_runs_and_its_approval_is_recorded(harness: Build) -> None:
    h = harness(approvers=[auto("approve")])
    result = await h.gateway.call(delete())
    assert result.status is ToolStatus.OK
    assert sent_arguments(h) == [{"path": "old.log"}]
    requested, decided = h.records("approval_requested"), h.records("approval_decided")
    assert requested[0]["reason"] == "deleting needs a human"
    assert decided[0]["approval"]["decided_by"] == "auto:ops"
    (record,) = h.records()
    assert record["decision"] == "require_approval" and record["rule"] == "delete-needs-approval"
    assert record["approval"]["status"] == "approved"
    assert record["approval"]["decided_by"] == "auto:ops"
    assert h.sample("stockade_approvals_total", outcome="approved") == 1
    stored = h.store.find(ApprovalStatus.APPROVED)[0]
    assert (stored.principal, stored.run_id, stored.call_id) == ("bob", "run-1", "c1")


async def test_a_denied_call_never_runs_and_the_model_reads_why(harness: Build) -> None:
    h = harness(approvers=[auto("deny", note="keep the logs for the audit")])
    result = await h.gateway.call(delete())
    assert result.status is ToolStatus.APPROVAL_DENIED
    assert result.error == "auto:ops denied the call: keep the logs for the audit"
    assert h.backend.requests == []
    assert h.records()[0]["approval"]["status"] == "denied"


async def test_a_decision_from_another_terminal_ends_the_wait(harness: Build) -> None:
    h = harness()
    task = asyncio.create_task(h.gateway.call(delete()))
    request = await pending(h.store)
    other = ApprovalStore(h.store.path)  # what `stockade approvals approve` opens
    assert await asyncio.to_thread(other.decide, request.id, approve=True, by="dave")
    async with asyncio.timeout(10):
        result = await task
    assert result.status is ToolStatus.OK
    assert h.records()[0]["approval"]["decided_by"] == "dave"


async def test_edited_arguments_are_validated_and_decided_again(harness: Build) -> None:
    h = harness(approvers=[editor({"path": "old.log.1"})])
    assert (await h.gateway.call(delete())).status is ToolStatus.OK
    assert sent_arguments(h) == [{"path": "old.log.1"}]
    (record,) = h.records()
    assert record["arguments"] == {"path": "old.log"}, "the original is kept"
    assert record["approval"]["edited_arguments"] == {"path": "old.log.1"}

    invalid = harness(approvers=[editor({"file": "old.log"})])
    result = await invalid.gateway.call(delete())
    assert result.status is ToolStatus.INVALID_ARGUMENTS
    assert result.error is not None and result.error.startswith(
        "the approver's edited arguments were rejected"
    )
    assert invalid.backend.requests == []

    denied = harness(approvers=[editor({"path": "secrets/token"})])
    result = await denied.gateway.call(delete())
    assert result.status is ToolStatus.DENIED
    assert result.error == ("the approver's edited arguments: the secrets directory is off limits")
    assert denied.backend.requests == []


def policy_decisions(h: Harness) -> dict[tuple[str, str], float]:
    (family,) = (f for f in h.metrics.registry.collect() if f.name == "stockade_policy_decisions")
    return {
        (sample.labels["decision"], sample.labels["rule"]): sample.value
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value
    }


@pytest.mark.parametrize(
    ("edit", "status"),
    [({"path": "old.log.1"}, ToolStatus.OK), ({"path": "secrets/token"}, ToolStatus.DENIED)],
)
async def test_a_call_with_edited_arguments_is_one_policy_decision(
    harness: Build, edit: dict[str, object], status: ToolStatus
) -> None:
    """The edit is decided again, but it is still one call: counted twice, a denial spike
    alert (denials over all decisions) and the decisions panel would both read it wrong."""
    h = harness(approvers=[editor(edit)])
    assert (await h.gateway.call(delete())).status is status
    assert policy_decisions(h) == {("require_approval", "delete-needs-approval"): 1}


@pytest.mark.parametrize(
    ("on_timeout", "status"), [("deny", ToolStatus.APPROVAL_DENIED), ("allow", ToolStatus.OK)]
)
async def test_nobody_answers_in_time(harness: Build, on_timeout: str, status: ToolStatus) -> None:
    policy = POLICY.replace(
        "approval_timeout_s: 30", f"approval_timeout_s: 0.2\non_approval_timeout: {on_timeout}"
    )
    h = harness(policy=policy)
    async with asyncio.timeout(10):
        result = await h.gateway.call(delete())
    assert result.status is status
    if status is ToolStatus.APPROVAL_DENIED:
        assert result.error is not None and "nobody approved the call within 0.2 s" in result.error
    assert h.records()[0]["approval"]["status"] == "expired"
    assert h.sample("stockade_approvals_total", outcome="expired") == 1


async def test_a_restart_while_pending_keeps_the_request_and_its_decision(harness: Build) -> None:
    first = harness()
    task = asyncio.create_task(first.gateway.call(delete()))
    request = await pending(first.store)
    task.cancel()  # the orchestrator goes down while the call waits
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.records()[-1]["status"] == "cancelled"
    assert ApprovalStore(first.store.path).decide(request.id, approve=True, by="erin")

    second = Harness(first.root)  # a new orchestrator on the same database and log
    result = await second.gateway.call(delete())  # the agent replays its pending call
    assert result.status is ToolStatus.OK
    assert len(second.store.find(None)) == 1, "no second request for the same call"
    assert second.records()[-1]["approval"]["decided_by"] == "erin"
    assert first.backend.requests == [] and len(second.backend.requests) == 1
    # The approval covers that call only: the same id with other arguments is another request.
    other = {"path": "other.log"}
    assert (
        second.store.find_for_call(
            run_id="run-1", call_id="c1", tool="files.delete", arguments=other
        )
        is None
    )
    consumed = second.store.get(request.id)
    assert consumed is not None and consumed.consumed_by == "c1"
    assert second.records()[-1]["approval"]["scope"] == "once"

    # The resumed decision is used up: replaying the same call once more asks again.
    again = asyncio.create_task(second.gateway.call(delete()))
    asked = await pending(second.store)
    assert asked.id != request.id
    assert second.store.decide(asked.id, approve=False, by="erin", note="once was enough")
    async with asyncio.timeout(10):
        assert (await again).status is ToolStatus.APPROVAL_DENIED
    assert len(second.backend.requests) == 1


async def test_the_terminal_prompt_is_dismissed_when_someone_else_decides(harness: Build) -> None:
    read_end, write_end = os.pipe()
    try:
        prompt = TerminalApprover(input_fd=read_end, output=io.StringIO(), user="ops")
        h = harness(approvers=[prompt])
        task = asyncio.create_task(h.gateway.call(delete()))
        request = await pending(h.store)
        assert ApprovalStore(h.store.path).decide(request.id, approve=False, by="frank")
        async with asyncio.timeout(10):
            result = await task
        assert (
            result.status is ToolStatus.APPROVAL_DENIED and result.error == "frank denied the call"
        )

        os.write(write_end, b"a\n")  # the same prompt answers the next request at once
        answered = await h.gateway.call(delete(call_id="c2"))
        assert answered.status is ToolStatus.OK
        assert h.records()[-1]["approval"]["decided_by"] == "terminal:ops"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_broken_approver_decides_nothing(harness: Build) -> None:
    async def broken(request: ApprovalRequest, /) -> ApprovalDecision | None:
        raise ConnectionError("chat service down")

    h = harness(approvers=[broken, auto("approve")])
    result = await h.gateway.call(delete())
    assert result.status is ToolStatus.OK, "the next approver still decides"
    assert h.records()[0]["approval"]["decided_by"] == "auto:ops"


async def test_the_model_spelling_of_a_tool_name_is_one_tool(harness: Build) -> None:
    h = harness(approvers=[auto("approve")])
    call = ToolCall(id="c9", name="files__delete", arguments={"path": "x"}, run_id="run-1")
    assert (await h.gateway.call(call)).status is ToolStatus.OK
    assert h.store.find(ApprovalStatus.APPROVED)[0].tool == "files.delete"
    assert h.records()[0]["tool"] == "files.delete"
    assert h.sample("stockade_tool_calls_total", tool="files.delete", status="ok") == 1


class Recorder:
    """An approver that answers from a list and remembers what it was asked."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision:
        self.asked.append(request.id)
        return ApprovalDecision(approved=self.answers.pop(0), by="gina")


async def test_an_identical_later_call_asks_again(harness: Build) -> None:
    approver = Recorder(True, True)
    h = harness(approvers=[approver])
    # The same run, call id, tool and arguments twice: what `stockade tools call` sent.
    assert (await h.gateway.call(delete())).status is ToolStatus.OK
    assert (await h.gateway.call(delete())).status is ToolStatus.OK
    assert len(approver.asked) == 2 and approver.asked[0] != approver.asked[1]
    assert len(h.backend.requests) == 2
    records = h.records()
    assert [r["approval"]["request_id"] for r in records] == approver.asked
    assert [r["approval"]["scope"] for r in records] == ["once", "once"]
    for request_id in approver.asked:
        used = h.store.get(request_id)
        assert used is not None and used.consumed_by == "c1" and used.consumed_at is not None


async def test_a_denial_is_not_reused_either(harness: Build) -> None:
    approver = Recorder(False, True)
    h = harness(approvers=[approver])
    assert (await h.gateway.call(delete())).status is ToolStatus.APPROVAL_DENIED
    assert (await h.gateway.call(delete())).status is ToolStatus.OK
    assert len(approver.asked) == 2 and len(h.backend.requests) == 1
    assert [r["approval"]["status"] for r in h.records()] == ["denied", "approved"]
    assert "scope" not in h.records()[0]["approval"], "a denial grants nothing"


async def test_a_grant_for_the_run_is_the_approvers_explicit_choice(harness: Build) -> None:
    h = harness()
    first = asyncio.create_task(h.gateway.call(delete("a.log", "c1")))
    request = await pending(h.store)
    assert ApprovalStore(h.store.path).decide(
        request.id, approve=True, by="hana", scope=ApprovalScope.RUN
    )
    async with asyncio.timeout(10):
        assert (await first).status is ToolStatus.OK
    decided = h.records("approval_decided")
    assert [(r["approval"]["request_id"], r["approval"]["scope"]) for r in decided] == [
        (request.id, "run")
    ], "recorded as a grant"

    # Later deletions in the run use the grant: nobody is asked, nothing new is stored.
    for number, path in enumerate(["b.log", "c.log", "a.log"], start=2):
        assert (await h.gateway.call(delete(path, f"c{number}"))).status is ToolStatus.OK
    assert len(h.backend.requests) == 4
    assert h.store.find(None) == [h.store.get(request.id)]
    records = h.records()
    assert [r["approval"]["request_id"] for r in records] == [request.id] * 4
    assert {r["approval"]["scope"] for r in records} == {"run"}
    assert {r["approval"]["decided_by"] for r in records} == {"hana"}
    assert len(h.records("approval_requested")) == len(h.records("approval_decided")) == 1
    assert h.sample("stockade_approvals_total", outcome="approved") == 1

    # Another run is not covered.
    other_run = asyncio.create_task(h.gateway.call(delete("a.log", "c9", run_id="run-2")))
    asked = await pending(h.store)
    assert asked.run_id == "run-2" and asked.id != request.id
    assert h.store.decide(asked.id, approve=False, by="hana")
    async with asyncio.timeout(10):
        assert (await other_run).status is ToolStatus.APPROVAL_DENIED


async def test_a_grant_for_identical_calls_covers_only_those(harness: Build) -> None:
    h = harness()
    first = asyncio.create_task(h.gateway.call(delete("a.log", "c1")))
    request = await pending(h.store)
    assert h.store.decide(request.id, approve=True, by="hana", scope=ApprovalScope.RUN_IDENTICAL)
    async with asyncio.timeout(10):
        assert (await first).status is ToolStatus.OK
    assert (await h.gateway.call(delete("a.log", "c2"))).status is ToolStatus.OK
    used = h.records()[-1]["approval"]
    assert (used["request_id"], used["scope"], used["decided_by"]) == (
        request.id,
        "run-identical",
        "hana",
    )

    different = asyncio.create_task(h.gateway.call(delete("b.log", "c3")))
    asked = await pending(h.store)
    assert asked.arguments == {"path": "b.log"}
    assert h.store.decide(asked.id, approve=False, by="hana")
    async with asyncio.timeout(10):
        assert (await different).status is ToolStatus.APPROVAL_DENIED
    assert len(h.backend.requests) == 2

"""/v1/approvals: a call that needs approval waits, open, for a decision taken through the API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from orchestrator.approvals import ApprovalStore
from orchestrator.config import StockadeConfig
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve, server_config

SECRET = "sk-" + "a" * 24


def shell(call_id: str, command: str = "ls", run_id: str = "run-1") -> dict[str, Any]:
    return {"id": call_id, "name": "shell.run", "arguments": {"command": command},
            "run_id": run_id}  # fmt: skip


async def pending(client: httpx.AsyncClient, count: int = 1) -> list[dict[str, Any]]:
    """The pending requests, once there are ``count`` of them (bounded wait)."""
    async with asyncio.timeout(10):
        while True:
            listed = await client.get("/v1/approvals")
            assert listed.status_code == 200, listed.text
            requests: list[dict[str, Any]] = listed.json()["approvals"]
            if len(requests) >= count:
                return requests
            await asyncio.sleep(0.02)


async def test_an_approval_gated_call_completes_after_an_approver_approves_it(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
        (request,) = await pending(bob)
        assert (request["tool"], request["principal"], request["run_id"], request["call_id"]) == (
            "shell.run", "alice", "run-1", "c1",
        )  # fmt: skip
        assert request["reason"] == "shell commands need a person"
        assert not waiting.done()  # the request stays open while nobody has decided

        refused = await alice.post(f"/v1/approvals/{request['id']}/approve")
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"

        shown = await bob.get(f"/v1/approvals/{request['id']}")
        assert shown.json()["status"] == "pending"
        approved = await bob.post(f"/v1/approvals/{request['id']}/approve", json={"note": "fine"})
        assert approved.status_code == 200, approved.text
        assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", "bob")
        answer = await waiting
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert len(scripted.requests) == 1
    records = served.audit_records()
    decided = [r for r in records if r["event"] == "approval_decided"]
    assert decided[0]["approval"]["decided_by"] == "bob"
    (call,) = [r for r in records if r["event"] == "call"]
    assert (call["principal"], call["approval"]["decided_by"], call["status"]) == (
        "alice", "bob", "ok",
    )  # fmt: skip


async def test_a_denial_with_a_note_reaches_the_caller(served: Served) -> None:
    async with served.client("caller") as alice, served.client("admin") as carol:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", "rm x")))
        (request,) = await pending(carol)
        denied = await carol.post(
            f"/v1/approvals/{request['id']}/deny", json={"note": "not on a Friday"}
        )
        assert denied.json()["status"] == "denied"
        again = await carol.post(f"/v1/approvals/{request['id']}/approve")
        answer = (await waiting).json()
    assert again.status_code == 409
    assert again.json()["code"] == "approval_not_pending"
    assert answer["status"] == "approval_denied"
    assert answer["error"] == "carol denied the call: not on a Friday"


async def test_edited_arguments_are_checked_first_then_run(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", "rm -rf /")))
        (request,) = await pending(bob)
        url = f"/v1/approvals/{request['id']}/approve"
        wrong = await bob.post(url, json={"arguments": {"command": 42}})
        assert wrong.status_code == 422
        assert wrong.json()["code"] == "invalid_arguments"
        assert "command" in wrong.json()["detail"]
        assert (await bob.get(f"/v1/approvals/{request['id']}")).json()["status"] == "pending"
        edited = await bob.post(url, json={"arguments": {"command": "ls /"}})
        assert edited.json()["edited_arguments"] == {"command": "ls /"}
        answer = (await waiting).json()
    assert answer["status"] == "ok"
    request_sent, _ = scripted.requests[0]
    assert json.loads(request_sent.stdin)["command"] == "ls /"
    (call,) = [r for r in served.audit_records() if r["event"] == "call"]
    assert call["arguments"]["command"] == "rm -rf /"
    assert call["approval"]["edited_arguments"] == {"command": "ls /"}


async def test_approvals_show_arguments_redacted_and_filter_by_status(served: Served) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob:
        waiting = asyncio.create_task(
            alice.post("/v1/tool-calls", json=shell("c1", f"curl -H 'key: {SECRET}'"))
        )
        (request,) = await pending(bob)
        assert SECRET not in json.dumps(request)
        assert "[REDACTED]" in request["arguments"]["command"]
        await bob.post(f"/v1/approvals/{request['id']}/deny")
        await waiting
        assert (await bob.get("/v1/approvals")).json()["approvals"] == []
        denied = (await bob.get("/v1/approvals", params={"status": "denied"})).json()
        everything = (await bob.get("/v1/approvals", params={"status": "all"})).json()
        wrong = await bob.get("/v1/approvals", params={"status": "maybe"})
        missing = await bob.get("/v1/approvals/0123456789abcdef")
        decide_missing = await bob.post("/v1/approvals/0123456789abcdef/deny")
    assert [r["id"] for r in denied["approvals"]] == [request["id"]]
    assert [r["id"] for r in everything["approvals"]] == [request["id"]]
    assert wrong.status_code == 422 and wrong.json()["code"] == "invalid_request"
    assert missing.status_code == decide_missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_a_list_is_bounded_and_says_when_it_left_requests_out(served: Served) -> None:
    """Decided requests are never deleted: status=all answered every request ever made,
    each with arguments of up to a megabyte."""
    store = ApprovalStore(served.config.approvals_db)
    made = [
        store.create(tool="shell.run", arguments={"n": n}, reason="r", timeout_s=60).id
        for n in range(5)
    ]
    async with served.client("approver") as bob:
        newest = (await bob.get("/v1/approvals", params={"limit": 2})).json()
        whole = (await bob.get("/v1/approvals", params={"status": "all", "limit": 5})).json()
        too_many = await bob.get("/v1/approvals", params={"limit": 1001})
    assert [r["id"] for r in newest["approvals"]] == made[3:] and newest["more"] is True
    assert [r["id"] for r in whole["approvals"]] == made and whole["more"] is False
    assert too_many.status_code == 422


async def test_edited_arguments_holding_the_redaction_marker_are_refused(served: Served) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob:
        waiting = asyncio.create_task(
            alice.post("/v1/tool-calls", json=shell("c1", f"curl -H 'key: {SECRET}'"))
        )
        (request,) = await pending(bob)
        url = f"/v1/approvals/{request['id']}/approve"
        # The approver edits what it was shown: the secret is gone from it.
        resent = await bob.post(url, json={"arguments": request["arguments"]})
        still = (await bob.get(f"/v1/approvals/{request['id']}")).json()["status"]
        await bob.post(f"/v1/approvals/{request['id']}/deny")
        answer = (await waiting).json()
    assert resent.status_code == 422
    assert resent.json()["code"] == "invalid_arguments"
    assert "[REDACTED] at $.command" in resent.json()["detail"]
    assert still == "pending"
    assert answer["status"] == "approval_denied"


async def test_a_grant_for_the_run_covers_the_runs_later_calls(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
        (request,) = await pending(bob)
        granted = await bob.post(f"/v1/approvals/{request['id']}/approve", json={"scope": "run"})
        assert granted.json()["scope"] == "run"
        assert (await waiting).json()["status"] == "ok"
        later = await alice.post("/v1/tool-calls", json=shell("c2", "pwd"))
        with_edit = await bob.post(
            f"/v1/approvals/{request['id']}/approve",
            json={"scope": "run", "arguments": {"command": "x"}},
        )
    assert later.json()["status"] == "ok"
    assert len(scripted.requests) == 2
    assert with_edit.status_code == 409  # decided already; the order of checks is stable


async def test_approvers_do_not_call_tools_and_callers_do_not_see_approvals(
    served: Served,
) -> None:
    async with served.client("approver") as bob, served.client("caller") as alice:
        call = await bob.post("/v1/tool-calls", json=shell("c1"))
        listed = await alice.get("/v1/approvals")
        tools = await bob.get("/v1/tools")  # an approver reads schemas to edit arguments
    assert call.status_code == listed.status_code == 403
    assert call.json()["code"] == listed.json()["code"] == "forbidden"
    assert "approver" in listed.json()["detail"]
    assert tools.status_code == 200
    assert not [r for r in served.audit_records() if r["event"] == "call"]


async def test_without_self_approval_someone_else_must_decide(tmp_path: Any) -> None:
    config: StockadeConfig = server_config(tmp_path / "state", self_approval=False)
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as running:
        running.tokens = tokens
        async with running.client("both") as dave, running.client("admin") as carol:
            waiting = asyncio.create_task(dave.post("/v1/tool-calls", json=shell("c1")))
            (request,) = await pending(dave)
            own = await dave.post(f"/v1/approvals/{request['id']}/approve")
            assert own.status_code == 403
            assert own.json()["code"] == "self_approval_forbidden"
            other = await carol.post(f"/v1/approvals/{request['id']}/approve")
            assert other.json()["decided_by"] == "carol"
            assert (await waiting).json()["status"] == "ok"


async def test_stopping_the_server_cancels_a_waiting_call_and_keeps_its_request(
    tmp_path: Any,
) -> None:
    config: StockadeConfig = server_config(tmp_path / "state")
    tokens = issue_tokens(config)
    async with contextlib.AsyncExitStack() as clients:
        async with serve(config, backend=ScriptedBackend()) as running:
            running.tokens = tokens
            alice = await clients.enter_async_context(running.client("caller"))
            bob = await clients.enter_async_context(running.client("approver"))
            waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
            (request,) = await pending(bob)
        # The server is gone (shutdown_grace_s is 1 here), and said so before it went.
        answer = await waiting
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "unavailable"
    (call,) = [r for r in running.audit_records() if r["event"] == "call"]
    assert call["status"] == "cancelled"
    store_request = ApprovalStore(config.approvals_db).get(request["id"])
    assert store_request is not None and store_request.status.value == "pending"

"""/v1/runs: agent runs started, streamed as server-sent events, read back and cancelled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.agent import Agent, AgentConfig
from orchestrator.config import StockadeConfig
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server import TokenStore
from orchestrator.testing import ScriptedModelServer, slow, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend

from .conftest import POLICY, Served, issue_tokens, serve
from .test_approvals_api import pending

NO_REFLECTION = AgentConfig(reflection=False)


def model_config(state_dir: Path, base_url: str, **extra: Any) -> StockadeConfig:
    """The test policy, state in ``state_dir``, the scripted model at ``base_url``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = state_dir / "policy.yaml"
    policy.write_text(POLICY)
    model = {"base_url": base_url, "name": "test-model", "timeout_s": 10, "max_attempts": 1}
    return StockadeConfig.model_validate(
        {"state_dir": state_dir, "policy": policy, "model": model, **extra}
    )


@asynccontextmanager
async def serve_runs(
    tmp_path: Path, model: ScriptedModelServer, **extra: Any
) -> AsyncIterator[Served]:
    """The API on the scripted backend with an agent on the scripted model."""
    config = model_config(tmp_path / "state", model.base_url, **extra)
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as running:
        running.tokens = tokens
        yield running


async def events_of(
    client: httpx.AsyncClient, run_id: str, arrived: asyncio.Queue[str] | None = None
) -> list[dict[str, Any]]:
    """Every server-sent event of a run's stream, until it ends (bounded wait); each
    event's type also goes to ``arrived`` as it comes."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(20), client.stream("GET", f"/v1/runs/{run_id}/events") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in answer.aiter_lines():
            if line.startswith(":"):  # a comment, as every SSE client takes it
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if not fields:  # the blank line after a comment
                continue
            data = json.loads(fields["data"])
            assert (fields["event"], int(fields["id"])) == (data["type"], len(events))
            events.append(data)
            if arrived is not None:
                arrived.put_nowait(data["type"])
            fields = {}
    return events


async def test_a_run_streams_its_events_in_order_and_ends(tmp_path: Path) -> None:
    script = [tool_calls(tool_call("python__run", {"code": "print(1)"})), text("the answer")]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
    ):
        started = await alice.post(
            "/v1/runs", json={"goal": "print one", "run_id": "r1", "principal": "mallory"}
        )
        assert started.status_code == 201, started.text
        assert (started.json()["run_id"], started.json()["principal"]) == ("r1", "alice")
        events = await events_of(alice, "r1")
        shown = await alice.get("/v1/runs/r1")
        replayed = await events_of(alice, "r1")  # from the run's files, once it has ended
    types = [event["type"] for event in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    states = [event["state"] for event in events if event["type"] == "state"]
    assert states == ["planning", "executing", "complete"]
    assert types.index("tool_call_started") < types.index("tool_call_finished")
    (finished_call,) = [event for event in events if event["type"] == "tool_call_finished"]
    assert (finished_call["tool"], finished_call["status"], finished_call["decision"]) == (
        "python.run", "ok", "allow",
    )  # fmt: skip
    assert events[-1]["answer"] == "the answer"
    assert replayed == events
    view = shown.json()
    assert (view["status"], view["answer"], view["principal"]) == (
        "complete",
        "the answer",
        "alice",
    )
    assert view["result"]["success"] is True
    assert view["result"]["tool_calls"] == {"ok": 1}
    record = [r for r in served.audit_records() if r.get("event") == "call"][-1]
    assert (record["principal"], record["run_id"]) == ("alice", "r1")


async def test_a_call_waiting_for_approval_is_an_event_and_the_run_goes_on_once_approved(
    tmp_path: Path,
) -> None:
    script = [tool_calls(tool_call("shell__run", {"command": "ls"})), text("listed")]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
        served.client("approver") as bob,
    ):
        await alice.post("/v1/runs", json={"goal": "list", "run_id": "r2"})
        streaming = asyncio.create_task(events_of(alice, "r2"))
        async with asyncio.timeout(10):
            while not (listed := (await bob.get("/v1/approvals")).json()["approvals"]):
                await asyncio.sleep(0.02)
        (request,) = listed
        assert (await alice.get("/v1/runs/r2")).json()["status"] == "executing"
        approved = await bob.post(f"/v1/approvals/{request['id']}/approve")
        assert approved.status_code == 200, approved.text
        events = await streaming
    (waiting,) = [event for event in events if event["type"] == "approval_pending"]
    assert (waiting["request_id"], waiting["tool"]) == (request["id"], "shell.run")
    (finished_call,) = [event for event in events if event["type"] == "tool_call_finished"]
    assert (finished_call["decision"], finished_call["status"]) == ("require_approval", "ok")
    assert events[-1]["type"] == "run_finished" and events[-1]["answer"] == "listed"


async def test_cancel_ends_the_run_and_its_stream(tmp_path: Path) -> None:
    script = [slow(text("too late"), 30)]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
    ):
        await alice.post("/v1/runs", json={"goal": "wait", "run_id": "r3"})
        streaming = asyncio.create_task(events_of(alice, "r3"))
        async with asyncio.timeout(10):
            while not model.chat_requests:
                await asyncio.sleep(0.02)
        cancelled = await alice.post("/v1/runs/r3/cancel", json={"reason": "changed my mind"})
        events = await streaming
        again = await alice.post("/v1/runs/r3/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["reason"]) == (
        "cancelled", "changed my mind",
    )  # fmt: skip
    assert cancelled.json()["result"]["status"] == "cancelled"
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    assert again.json()["status"] == "cancelled"


async def test_a_stream_ends_once_its_token_is_revoked(tmp_path: Path) -> None:
    """The token was checked once, when the stream opened: a revoked token kept receiving
    the run's events (its model text, calls and answer) until the run ended."""
    script = [tool_calls(tool_call("shell__run", {"command": "ls"})), text("the secret answer")]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
        served.client("approver") as bob,
    ):
        await alice.post("/v1/runs", json={"goal": "list", "run_id": "r5"})
        arrived: asyncio.Queue[str] = asyncio.Queue()
        streaming = asyncio.create_task(events_of(alice, "r5", arrived))
        (request,) = await pending(bob)
        # Revoked only once the stream has carried the wait for approval: before that,
        # a stream opened late (a loaded machine) is refused outright, or ends first.
        async with asyncio.timeout(10):
            while await arrived.get() != "approval_pending":
                pass
        store = TokenStore(served.config.tokens_db)
        try:
            assert store.revoke(served.tokens["caller"].split("_")[1])
        finally:
            store.close()
        approved = await bob.post(f"/v1/approvals/{request['id']}/approve")
        assert approved.status_code == 200, approved.text
        events = await streaming
        refused = await alice.get("/v1/runs/r5/events")
    types = [event["type"] for event in events]
    assert "approval_pending" in types
    assert "tool_call_finished" not in types and "run_finished" not in types
    assert refused.status_code == 401


async def test_runs_belong_to_their_principal(tmp_path: Path) -> None:
    async with (
        ScriptedModelServer([text("mine")]) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
        served.client("both") as dave,
        served.client("admin") as carol,
        served.client("approver") as bob,
        served.client() as nobody,
    ):
        await alice.post("/v1/runs", json={"goal": "g", "run_id": "r4"})
        await events_of(alice, "r4")
        taken = await dave.post("/v1/runs", json={"goal": "g", "run_id": "r4"})
        peeked = await dave.get("/v1/runs/r4")
        streamed = await dave.get("/v1/runs/r4/events")
        stopped = await dave.post("/v1/runs/r4/cancel")
        by_admin = await carol.get("/v1/runs/r4")
        reused = await alice.post("/v1/runs", json={"goal": "g", "run_id": "r4"})
        missing = await alice.get("/v1/runs/nope")
        approver = await bob.post("/v1/runs", json={"goal": "g"})
        anonymous = await nobody.get("/v1/runs/r4")
    for refused in (taken, peeked, streamed, stopped):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "run_owned_by_another_principal"
    assert by_admin.status_code == 200 and by_admin.json()["answer"] == "mine"
    assert (reused.status_code, reused.json()["code"]) == (409, "run_id_in_use")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (approver.status_code, approver.json()["code"]) == (403, "forbidden")
    assert anonymous.status_code == 401


async def test_a_run_made_outside_the_api_stays_its_principals(tmp_path: Path) -> None:
    """Run ids were claimed only through the API: one tool call (or a refused start) with
    the id of erin's `stockade run` on the same state directory made it alice's, who then
    read its goal, answer and events; an id alice claimed first let her read erin's run."""
    script = [text("erin's private answer"), text("erin's second answer")]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
        served.client("admin") as carol,
    ):
        squatted = await alice.post("/v1/tool-calls", json=files_list("c0", "nightly-2"))
        assert squatted.status_code == 200, squatted.text
        # What `stockade run --principal erin --run-id …` does, on the server's state directory.
        async with Agent.open(served.app.state.stockade.platform, NO_REFLECTION) as agent:
            for run_id in ("nightly-1", "nightly-2"):
                await agent.start("erin's goal", principal="erin", run_id=run_id).result()
        call = await alice.post("/v1/tool-calls", json=files_list("c1", "nightly-1"))
        start = await alice.post("/v1/runs", json={"goal": "g", "run_id": "nightly-1"})
        reads = [await alice.get(f"/v1/runs/{run_id}{end}")
                 for run_id in ("nightly-1", "nightly-2")
                 for end in ("", "/events", "/artifacts")]  # fmt: skip
        by_admin = await carol.get("/v1/runs/nightly-2")
    for refused in (call, start):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "run_owned_by_another_principal"
    for read in reads:
        assert read.status_code in (403, 404), read.text
        assert "erin" not in read.text
    assert by_admin.status_code == 200 and by_admin.json()["principal"] == "erin"


def files_list(call_id: str, run_id: str) -> dict[str, Any]:
    return {"id": call_id, "name": "files.list", "arguments": {}, "run_id": run_id}


async def test_two_starts_of_one_new_run_id_at_once_start_one_run(tmp_path: Path) -> None:
    """Both passed the check while one looked at the files; the second then failed in the
    agent, answered as an invalid request (422) instead of the id being in use (409)."""
    async with (
        ScriptedModelServer([text("one")]) as model,
        serve_runs(tmp_path, model) as served,
        served.client("caller") as alice,
    ):
        answers = await asyncio.gather(
            *(alice.post("/v1/runs", json={"goal": "g", "run_id": "twice"}) for _ in range(4))
        )
        await events_of(alice, "twice")
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201, 409, 409, 409], [answer.text for answer in answers]


async def test_a_principal_has_at_most_its_cap_of_runs_under_way(tmp_path: Path) -> None:
    """With ``server.max_runs_per_principal: 2`` alice's third run at once is refused (429,
    ``too_many_runs``) while another principal still starts one; once one of alice's has
    ended she starts another."""
    script = [slow(text("one"), 30), slow(text("two"), 30), text("dave's"), text("three")]
    async with (
        ScriptedModelServer(script) as model,
        serve_runs(tmp_path, model, server={"max_runs_per_principal": 2}) as served,
        served.client("caller") as alice,
        served.client("both") as dave,
    ):
        for run_id in ("a1", "a2"):
            started = await alice.post("/v1/runs", json={"goal": "wait", "run_id": run_id})
            assert started.status_code == 201, started.text
        third = await alice.post("/v1/runs", json={"goal": "wait", "run_id": "a3"})
        other = await dave.post("/v1/runs", json={"goal": "g", "run_id": "d1"})
        await events_of(dave, "d1")
        await alice.post("/v1/runs/a1/cancel")
        again = await alice.post("/v1/runs", json={"goal": "g", "run_id": "a3"})
        await alice.post("/v1/runs/a2/cancel")
        await events_of(alice, "a3")
    assert (third.status_code, third.json()["code"]) == (429, "too_many_runs"), third.text
    assert "server.max_runs_per_principal" in third.json()["detail"]
    assert other.status_code == 201, other.text
    assert again.status_code == 201, again.text


async def test_without_a_model_runs_are_unavailable(served: Served) -> None:
    async with served.client("caller") as alice:
        refused = await alice.post("/v1/runs", json={"goal": "anything"})
        invalid = await alice.post("/v1/runs", json={"goal": "g", "run_id": "../x"})
    assert (refused.status_code, refused.json()["code"]) == (503, "unavailable")
    assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_request")


@pytest.mark.docker
async def test_cancel_on_real_containers_leaves_no_container(
    tmp_path: Path, images: ImageBuilder, no_leaks: None, own_containers: Callable[[], list[str]]
) -> None:
    sleeping = tool_calls(tool_call("python__run", {"code": "import time; time.sleep(60)"}))
    async with ScriptedModelServer([sleeping]) as model:
        config = model_config(
            tmp_path / "state",
            model.base_url,
            toolkits=["toolkits.python"],
            sandbox={"profiles": {"default": {"pool_size": 1}}},
        )
        tokens = issue_tokens(config)
        async with serve(config, agent=NO_REFLECTION) as served:
            served.tokens = tokens
            (warm,) = own_containers()  # warmed before the first request: the call takes it
            async with served.client("caller") as alice:
                await alice.post("/v1/runs", json={"goal": "sleep", "run_id": "r5"})
                async with asyncio.timeout(30):
                    while not any(
                        r.get("run_id") == "r5" and r["event"] == "intent"
                        for r in served.audit_records()
                    ):
                        await asyncio.sleep(0.05)
                    # The intent is written before the call takes its container; the
                    # pool starts a replacement once it has (pool_size 1): wait for that.
                    while set(own_containers()) <= {warm}:
                        await asyncio.sleep(0.05)
                cancelled = await alice.post("/v1/runs/r5/cancel")
                # Its removal runs in the background: a bounded wait for it.
                async with asyncio.timeout(20):
                    while warm in own_containers():
                        await asyncio.sleep(0.1)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    calls = [r for r in served.audit_records() if r["event"] == "call" and r["run_id"] == "r5"]
    assert [r["status"] for r in calls] == ["cancelled"]
    # no_leaks: nothing of this process is left once the server has stopped.

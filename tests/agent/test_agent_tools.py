"""The agent's tool calls end to end: the real openai SDK over HTTP to the scripted model,
every call through the gateway into real containers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestrator.agent import (
    AgentConfig,
    ApprovalPending,
    RunStatus,
    StateChanged,
    ToolCallFinished,
    ToolOutput,
    read_result,
)
from orchestrator.approvals import ApprovalStore, AutoApprovalRule, AutoApprover
from orchestrator.testing import ScriptedModelServer, json_reply, text, tool_call, tool_calls

from .conftest import TEST_POLICY, Setup, open_agent, write_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

DONE = json_reply({"complete": True, "reason": "done"})


def finished(result_log: tuple[object, ...]) -> list[ToolCallFinished]:
    return [event for event in result_log if isinstance(event, ToolCallFinished)]


async def test_a_multi_step_goal(setup: Setup) -> None:
    """Write a file, run Python on it, read the result back: one call per turn."""
    code = (
        "numbers = [int(n) for n in open('data.txt').read().split()]\n"
        "open('result.txt', 'w').write(str(sum(n * n for n in numbers)))\n"
    )
    setup.server.extend(
        tool_calls(tool_call("files__write", {"path": "data.txt", "content": "3 4 5"})),
        tool_calls(tool_call("python__run", {"code": code})),
        tool_calls(tool_call("files__read", {"path": "result.txt"})),
        text("The sum of the squares is 50."),
        DONE,
    )
    events: list[object] = []
    async with open_agent(setup.config) as agent:
        result = await agent.run(
            "Sum the squares of 3, 4 and 5 via a file.", on_event=events.append
        )
    assert result.success and result.status is RunStatus.COMPLETE, result.reason
    assert result.answer == "The sum of the squares is 50."
    assert result.iterations == 4 and result.tool_calls == {"ok": 3}
    assert result.model_calls == 5 and result.reflections == 1
    assert result.usage.total_tokens > 0 and not result.usage.estimated
    read_back = setup.server.chat_requests[3].tool_results[-1]["content"]
    assert json.loads(read_back)["content"] == "50"
    # Live output goes to the caller only: the log keeps every other event, in order.
    logged = [event for event in events if not isinstance(event, ToolOutput)]
    assert list(result.log) == logged, "the result's log is every event, in order"
    states = [e.state for e in result.log if isinstance(e, StateChanged)]
    assert states == [
        RunStatus.PLANNING,
        RunStatus.EXECUTING,
        RunStatus.REFLECTING,
        RunStatus.COMPLETE,
    ]
    assert [e.decision for e in finished(result.log)] == ["allow"] * 3
    # The execution log on disk holds the same events; every call is audited under the run.
    assert read_result(setup.home, result.run_id) == result
    assert len(Path(result.log_path).read_text().splitlines()) == len(result.log)
    audited = [r for r in setup.audit() if r["run_id"] == result.run_id]
    assert [r["tool"] for r in audited] == ["files.write", "python.run", "files.read"]
    assert {r["principal"] for r in audited} == {"local"}
    assert result.workspace and (Path(result.workspace) / "result.txt").read_text() == "50"


async def test_parallel_calls_are_answered_in_order(setup: Setup) -> None:
    setup.server.extend(
        tool_calls(
            *(tool_call("files__write", {"path": f"{n}.txt", "content": str(n)}) for n in range(3))
        ),
        text("Three files."),
        DONE,
    )
    async with open_agent(setup.config) as agent:
        result = await agent.run("Write three files at once.")
    assert result.success and result.tool_calls == {"ok": 3}
    asked = setup.server.chat_requests[1].messages[-4]
    answers = setup.server.chat_requests[1].messages[-3:]
    assert [a["tool_call_id"] for a in answers] == [c["id"] for c in asked["tool_calls"]]
    assert sorted(p.name for p in Path(result.workspace or "").iterdir()) == [
        "0.txt",
        "1.txt",
        "2.txt",
    ]


async def test_calls_past_the_cap_are_skipped_and_answered(setup: Setup) -> None:
    setup.server.extend(
        tool_calls(
            *(tool_call("files__write", {"path": f"{n}.txt", "content": "x"}) for n in range(4))
        ),
        text("Two of four."),
        DONE,
    )
    async with open_agent(setup.config, AgentConfig(max_tool_calls_per_iteration=2)) as agent:
        result = await agent.run("Write four files.")
    assert result.success and result.tool_calls == {"ok": 2, "skipped": 2}
    answers = setup.server.chat_requests[1].tool_results
    assert len(answers) == 4
    assert [a["content"].startswith("[skipped]") for a in answers] == [False, False, True, True]
    assert "at most 2 tool calls run per turn" in answers[-1]["content"]
    assert sorted(p.name for p in Path(result.workspace or "").iterdir()) == ["0.txt", "1.txt"]
    skipped = [e for e in finished(result.log) if e.status == "skipped"]
    assert len(skipped) == 2 and all(e.decision is None for e in skipped)
    assert not any(
        r["tool"] == "files.write" and r["arguments"]["path"] in {"2.txt", "3.txt"}
        for r in setup.audit()
    ), "a skipped call never reaches the gateway"


async def test_tool_call_ids_repeating_across_turns(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    """A server numbering calls call_0, call_1… in every response: each call is its own in the
    loop, the approvals and the audit log."""
    approve = AutoApprover(
        [AutoApprovalRule(name="ok", tools=["files.delete"], decision="approve")]
    )
    async with ScriptedModelServer(tool_call_ids="per_response") as server:
        config = write_config(tmp_path, server.base_url, policy=TEST_POLICY)
        server.extend(
            tool_calls(
                tool_call("files__write", {"path": "a.txt", "content": "a"}),
                tool_call("files__write", {"path": "b.txt", "content": "b"}),
            ),
            tool_calls(tool_call("files__delete", {"path": "a.txt"})),
            tool_calls(tool_call("files__delete", {"path": "b.txt"})),
            text("Both gone."),
            DONE,
        )
        async with open_agent(config, approvers=[approve]) as agent:
            result = await agent.run("Write two files and delete them.")
    assert result.success and result.tool_calls == {"ok": 4}, result.reason
    assert [m.get("tool_call_id") for m in server.chat_requests[3].tool_results] == [
        "call_0",
        "call_1",
        "call_0",
        "call_0",
    ]
    audited = [r for r in Setup(tmp_path, server, config).audit() if r["run_id"] == result.run_id]
    assert len({r["call_id"] for r in audited}) == 4, "four calls, four ids"
    requests = ApprovalStore(tmp_path / "approvals.db").find(status=None)
    assert len(requests) == 2 and len({r.call_id for r in requests}) == 2
    assert all(r.consumed_by for r in requests), "each approval was used by its own call"
    deletes = [e for e in finished(result.log) if e.tool == "files.delete"]
    assert [(e.decision, e.approved_by) for e in deletes] == [("require_approval", "auto:ok")] * 2
    assert not any(Path(result.workspace or "").iterdir())


async def test_refusals_go_back_to_the_model_which_recovers(setup: Setup) -> None:
    """A denial, a rate limit (with its retry_after) and a rejection decided in another
    terminal are answers the model reads; the run goes on to its answer."""
    setup.server.extend(
        tool_calls(tool_call("files__read", {"path": "secret.txt"})),
        tool_calls(
            tool_call("python__run", {"code": "print(1)"}),
            tool_call("python__run", {"code": "print(2)"}),
        ),
        tool_calls(tool_call("files__delete", {"path": "notes.txt"})),
        text("I could print 1; the secret, the second print and the delete were refused."),
        DONE,
    )
    waiting: asyncio.Queue[ApprovalPending] = asyncio.Queue()

    def seen(event: object) -> None:
        if isinstance(event, ApprovalPending):
            waiting.put_nowait(event)

    async with open_agent(setup.config) as agent:
        run = asyncio.create_task(
            agent.run("Read the secret, print twice, delete the notes.", on_event=seen)
        )
        async with asyncio.timeout(60):
            pending = await waiting.get()
        assert pending.tool == "files.delete" and pending.reason == "deleting needs approval"
        # Someone at another terminal: stockade approvals deny ID --note "keep the files".
        ApprovalStore(setup.home / "approvals.db").decide(
            pending.request_id, approve=False, by="oncall", note="keep the files"
        )
        result = await run
    assert result.success, result.reason
    assert result.tool_calls == {"denied": 1, "ok": 1, "rate_limited": 1, "approval_denied": 1}
    answers = [m["content"] for m in setup.server.chat_requests[3].tool_results]
    assert answers[0] == "[denied]\nsecrets are off limits"
    assert json.loads(answers[1])["stdout"] == "1\n"
    assert answers[2].startswith("[rate_limited]\nrate limit 'python-per-run' reached")
    assert "retry after" in answers[2]
    assert answers[3] == "[approval_denied]\noncall denied the call: keep the files"
    calls = finished(result.log)
    assert [(e.status, e.decision) for e in calls] == [
        ("denied", "deny"),
        ("ok", "allow"),
        ("rate_limited", None),
        ("approval_denied", "require_approval"),
    ]
    assert calls[2].retry_after_s and calls[2].retry_after_s > 50
    assert pending.call_id == calls[3].call_id and calls[3].approved_by is None

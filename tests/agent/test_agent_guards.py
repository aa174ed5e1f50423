"""What keeps a run in bounds, end to end: loop detection, the context budget, reflection,
model failures, the run timeout, the model budget, a platform that cannot run calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent import (
    Agent,
    AgentConfig,
    ContextSummarised,
    DetectionSettings,
    Intervened,
    ModelTurn,
    Reflected,
    RunStatus,
    read_state,
)
from orchestrator.agent._context import SUMMARY_MARK, SUMMARY_PROMPT
from orchestrator.config import load_config
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.platform import Platform
from orchestrator.testing import (
    ChatRequest,
    Reply,
    ScriptedModelServer,
    Usage,
    json_reply,
    rate_limited,
    server_error,
    slow,
    text,
    tool_call,
    tool_calls,
)
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Setup, open_agent, write_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

DONE = json_reply({"complete": True, "reason": "done"})


async def test_loop_detection_warns_once_then_stops_the_run(setup: Setup) -> None:
    looping = tool_calls(tool_call("files__read", {"path": "missing.txt"}))
    setup.server.extend(*[looping] * 8)
    config = AgentConfig(detection=DetectionSettings(repeated_error=2, repeated_call=0))
    async with open_agent(setup.config, config) as agent:
        result = await agent.run("Read missing.txt until it appears.")
    assert result.status is RunStatus.FAILED
    assert result.reason is not None
    assert result.reason.startswith("stopped by loop detection (repeated_error)")
    assert result.interventions == 1 and result.iterations == 4
    warned = setup.server.chat_requests[2].last_message
    assert warned is not None and warned["role"] == "user"
    assert warned["content"].startswith("Stockade loop detection: files.read failed 2 times")
    found = [e for e in result.log if isinstance(e, Intervened)]
    assert [(e.pattern, e.final) for e in found] == [
        ("repeated_error", False),
        ("repeated_error", True),
    ]


def paired(messages: list[dict[str, Any]]) -> bool:
    """Each assistant message's calls are answered right after it, and only they are."""
    expected: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            if not expected or message["tool_call_id"] != expected.pop(0):
                return False
        elif expected:
            return False
        else:
            expected = [call["id"] for call in message.get("tool_calls") or ()]
    return not expected


async def test_older_turns_are_summarised_at_the_budget(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    turns = 0

    def model(request: ChatRequest) -> Reply:
        nonlocal turns
        if request.messages[0]["content"] == SUMMARY_PROMPT:
            assert "[tool result" in request.messages[1]["content"]
            return text("Printed a long line of x several times; nothing else to keep.")
        if request.json_mode:
            return DONE
        turns += 1
        if turns <= 6:
            return tool_calls(tool_call("python__run", {"code": f"print('{turns}' * 1600)"}))
        return text("Printed six long lines.")

    async with ScriptedModelServer(handler=model) as server:
        config = write_config(tmp_path, server.base_url, toolkits="[toolkits.python]")
        agent_config = AgentConfig(context_budget_tokens=1500, keep_recent_turns=1)
        async with open_agent(config, agent_config) as agent:
            result = await agent.run("Print six long lines.")
    assert result.success, result.reason
    assert result.summaries >= 2
    requests = [r for r in server.chat_requests if r.tools]
    goal = requests[0].messages[:2]
    for request in requests:
        assert request.messages[:2] == goal, "the system prompt and the goal stay"
        assert paired(request.messages[2:]), "no tool message is separated from its call"
        assert sum(len(m.get("content") or "") for m in request.messages) < 1500 * 4
    summarised = [r for r in requests[1:] if SUMMARY_MARK in (r.messages[2].get("content") or "")]
    assert summarised and summarised[-1].messages[3]["role"] == "assistant"
    shrunk = [e for e in result.log if isinstance(e, ContextSummarised)]
    assert all(e.tokens_after < e.tokens_before for e in shrunk)
    summaries = [e for e in result.log if isinstance(e, ModelTurn) and e.purpose == "summary"]
    assert len(summaries) == result.summaries


async def test_reflection_says_not_complete_and_the_run_goes_on(setup: Setup) -> None:
    setup.server.extend(
        text("All done."),
        json_reply(
            {"complete": False, "reason": "out.txt was never written", "missing": "write out.txt"}
        ),
        tool_calls(tool_call("files__write", {"path": "out.txt", "content": "ok"})),
        text("out.txt is written."),
        DONE,
    )
    async with open_agent(setup.config) as agent:
        result = await agent.run("Write out.txt.")
    assert result.success and result.answer == "out.txt is written."
    assert result.reflections == 2 and result.tool_calls == {"ok": 1}
    reflection = setup.server.chat_requests[1]
    assert reflection.json_mode and not reflection.tools
    told = setup.server.chat_requests[2].last_message
    assert told is not None and told["content"].startswith(
        "Not done yet: out.txt was never written Still to do: write out.txt"
    )
    verdicts = [e.complete for e in result.log if isinstance(e, Reflected)]
    assert verdicts == [False, True]


@pytest.mark.parametrize("answer", ["{definitely not json", "", '{"reason": "no verdict here"}'])
async def test_an_unreadable_reflection_is_not_fatal(setup: Setup, answer: str) -> None:
    setup.server.extend(text("The answer is 4."), text(answer))
    async with open_agent(setup.config) as agent:
        result = await agent.run("What is 2 + 2?")
    assert result.success and result.answer == "The answer is 4."
    reflected = [e for e in result.log if isinstance(e, Reflected)]
    assert len(reflected) == 1 and reflected[0].complete is None


async def test_reflections_are_bounded(setup: Setup) -> None:
    never = json_reply({"complete": False, "reason": "never good enough"})
    setup.server.extend(text("one"), never, text("two"))
    async with open_agent(setup.config, AgentConfig(max_reflections=1)) as agent:
        result = await agent.run("Say something.")
    assert result.success and result.answer == "two" and result.reflections == 1


async def test_model_429_and_500_are_retried(setup: Setup) -> None:
    setup.server.inject(rate_limited(retry_after_s=1), server_error())
    setup.server.extend(text("Fine."))
    async with open_agent(setup.config, AgentConfig(reflection=False)) as agent:
        result = await agent.run("Answer.")
    assert result.success and result.answer == "Fine."
    first, second, _ = setup.server.chat_requests
    assert second.received_at - first.received_at >= 1.0, "Retry-After was honoured"
    turns = [e for e in result.log if isinstance(e, ModelTurn)]
    assert turns[0].attempts == 3 and result.model_calls == 1


async def test_model_failures_past_the_retries_fail_the_run(setup: Setup) -> None:
    setup.server.inject(server_error(), server_error(), server_error())
    async with open_agent(setup.config) as agent:
        result = await agent.run("Answer.")
    assert result.status is RunStatus.FAILED and result.model_calls == 0
    assert result.reason is not None
    assert result.reason.startswith("no answer from the model: gave up after 3 attempts in ")
    assert result.reason.endswith("; last: the model server failed (500): the model server failed")


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ("{max_model_calls_per_run: 2}", "max_model_calls_per_run is 2 and the run has used 2"),
        ("{max_tokens_per_run: 1500}", "max_tokens_per_run is 1500 and the run has used 2020"),
    ],
)
async def test_the_model_budget_ends_the_run(
    tmp_path: Path, images: object, no_leaks: None, limits: str, reason: str
) -> None:
    policy = f"version: 1\nrules:\n  - {{name: all, tools: '*', decision: allow}}\nmodel_limits: {limits}\n"
    turn = tool_calls(
        tool_call("files__write", {"path": "a.txt", "content": "a"}),
        usage=Usage(prompt_tokens=1000, completion_tokens=10),
    )
    async with ScriptedModelServer([turn] * 5) as server:
        config = write_config(tmp_path, server.base_url, policy=policy)
        async with open_agent(config) as agent:
            result = await agent.run("Write forever.")
    assert result.status is RunStatus.FAILED and result.iterations == 3
    assert result.reason == f"the run's model budget is spent: {reason} (the policy's model_limits)"
    assert len(server.chat_requests) == 2 and result.model_calls == 2


async def test_the_run_timeout_cancels_calls_and_leaves_no_container(
    setup: Setup, own_containers: Callable[[], list[str]]
) -> None:
    setup.server.extend(
        tool_calls(tool_call("python__run", {"code": "import time; time.sleep(60)"}))
    )
    # No warm pool: every container of this process is the call's.
    async with open_agent(setup.config, AgentConfig(run_timeout_s=8), pools=False) as agent:
        started = time.monotonic()
        result = await agent.run("Sleep a minute.")
        assert time.monotonic() - started < 20
        assert result.status is RunStatus.FAILED
        assert (
            result.reason == "the run timed out after 8 s (run_timeout_s); its calls were cancelled"
        )
        deadline = time.monotonic() + 20
        while own_containers():
            assert time.monotonic() < deadline, "the call's container was not removed"
            await asyncio.sleep(0.1)
    cancelled = [r for r in setup.audit() if r["run_id"] == result.run_id]
    assert [r["status"] for r in cancelled] == ["cancelled"]


async def test_a_cancelled_run_is_recorded_as_cancelled(
    setup: Setup, own_containers: Callable[[], list[str]]
) -> None:
    setup.server.extend(
        tool_calls(tool_call("python__run", {"code": "import time; time.sleep(60)"}))
    )
    async with open_agent(setup.config, warm=True) as agent:
        handle = agent.start("Sleep a minute.")
        deadline = time.monotonic() + 30
        while not setup.sandbox_wanted(handle.run_id):
            assert time.monotonic() < deadline, "the call never started"
            await asyncio.sleep(0.05)
        assert handle.state.in_flight, "the checkpointed state names the call in flight"
        handle.cancel("stopped by the test")
        result = await handle.result()
        assert result.status is RunStatus.CANCELLED and result.reason == "stopped by the test"
        assert handle.done() and result.model_calls == 1
        assert read_state(setup.home, handle.run_id).status is RunStatus.CANCELLED
    assert not own_containers()
    cancelled = [r for r in setup.audit() if r["run_id"] == result.run_id]
    assert [r["status"] for r in cancelled] == ["cancelled"]


async def test_an_infrastructure_failure_fails_the_run_cleanly(tmp_path: Path) -> None:
    broken = InfrastructureError(
        "engine gone", code=ErrorCode.ENGINE_UNAVAILABLE, op="container.create", retryable=False
    )
    async with ScriptedModelServer(
        [
            tool_calls(
                tool_call("files__write", {"path": "a", "content": "a"}),
                tool_call("files__write", {"path": "b", "content": "b"}),
            )
        ]
    ) as server:
        config = load_config(write_config(tmp_path, server.base_url), environ={})
        backend = ScriptedBackend([broken])
        async with (
            Platform.open(config, backend=backend) as platform,
            Agent.open(platform) as agent,
        ):
            result = await agent.run("Write two files.")
    assert result.status is RunStatus.FAILED
    assert result.reason is not None
    assert result.reason.startswith("the platform could not run files.write: ")
    assert "engine gone" in result.reason
    assert result.tool_calls == {"infrastructure_error": 1, "ok": 1}


async def test_cancelling_stops_a_model_call_in_flight(tmp_path: Path) -> None:
    """No docker here: the sandbox is scripted, the model takes its time."""
    async with ScriptedModelServer(
        [slow(text("too late"), 30), slow(text("too late"), 30)]
    ) as server:
        config = load_config(write_config(tmp_path, server.base_url), environ={})
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(run_timeout_s=2)) as agent,
        ):
            started = time.monotonic()
            timed_out = await agent.run("Answer slowly.")
            assert time.monotonic() - started < 10
            handle = agent.start("Answer slowly.")
            await asyncio.to_thread(server.wait_for_requests, 2)
            handle.cancel("stopped by the test")
            cancelled = await handle.result()
            assert time.monotonic() - started < 15
    assert timed_out.status is RunStatus.FAILED and timed_out.model_calls == 0
    assert timed_out.reason is not None and "timed out after 2 s" in timed_out.reason
    assert cancelled.status is RunStatus.CANCELLED and cancelled.model_calls == 0

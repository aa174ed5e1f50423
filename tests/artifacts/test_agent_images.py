"""The agent and artifacts, end to end: the real openai SDK against the scripted server,
every tool call in a real container."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent import Agent, AgentConfig, Notice
from orchestrator.agent._images import IMAGE_MARK
from orchestrator.config import load_config
from orchestrator.errors import UsageError
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.tools import ToolCall

from .helpers import PNG_WRITER, png, png_size

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

CHART = (
    PNG_WRITER
    + """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/chart.png", "wb").write(png(24, 16))
open("outputs/data.csv", "w").write("x,y\\n1,2\\n3,4\\n")
open("outputs/vector.svg", "w").write('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
"""
)

POLICY = "version: 1\ndefault: allow\n"


def write_config(home: Path, base_url: str, *, accepts_images: bool) -> Path:
    (home / "policy.yaml").write_text(POLICY)
    path = home / "stockade.yaml"
    path.write_text(
        f"state_dir: {home}\n"
        "policy: policy.yaml\n"
        "toolkits: [toolkits.python]\n"
        "sandbox: {profiles: {default: {pool_size: 1}}}\n"
        f"model: {{base_url: '{base_url}', name: test-model, timeout_s: 10, max_attempts: 1, "
        f"accepts_images: {str(accepts_images).lower()}}}\n"
        "memory: {enabled: false}\n"
    )
    return path


@asynccontextmanager
async def agent_on(config: Path, agent_config: AgentConfig) -> AsyncIterator[Agent]:
    async with (
        Platform.open(load_config(config, environ={}), pools=False) as platform,
        Agent.open(platform, agent_config) as agent,
    ):
        yield agent


def image_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        m
        for m in messages
        if m["role"] == "user"
        and isinstance(m["content"], list)
        and m["content"][0].get("text", "").startswith(IMAGE_MARK)
    ]


@pytest.fixture
async def server(images: ImageBuilder, no_leaks: None) -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer() as started:
        yield started


async def test_a_model_that_reads_images_gets_one_message_citing_the_call(
    tmp_path: Path, server: ScriptedModelServer
) -> None:
    server.extend(
        tool_calls(
            tool_call("python__run", {"code": CHART}, id="call_chart"),
            tool_call("python__run", {"code": "print(1)"}, id="call_plain"),
        ),
        text("The chart is drawn."),
    )
    config = write_config(tmp_path, server.base_url, accepts_images=True)
    async with agent_on(config, AgentConfig(reflection=False)) as agent:
        result = await agent.run("Draw a chart", run_id="run-img")
    assert result.success, result.reason
    messages = server.chat_requests[1].messages
    roles = [m["role"] for m in messages]
    # The batch's two tool messages, then the one image message, last.
    assert roles[-4:] == ["assistant", "tool", "tool", "user"]
    (shown,) = image_messages(messages)
    assert shown is messages[-1] or shown == messages[-1]
    caption, *parts = shown["content"]
    assert "call_chart" in caption["text"] and "chart.png" in caption["text"]
    assert "call_plain" not in caption["text"]
    # Only the PNG: SVG is active content and CSV is no image.
    assert [p["type"] for p in parts] == ["image_url"]
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = base64.b64decode(url.removeprefix("data:image/png;base64,"))
    assert decoded == png(24, 16) and png_size(decoded) == (24, 16)
    # The tool message names every artifact in text, the SVG as what it is.
    chart_answer = next(m for m in messages if m.get("tool_call_id") == "call_chart")["content"]
    assert "artifact: chart.png, image/png" in chart_answer
    assert "artifact: vector.svg, image/svg+xml" in chart_answer
    assert "artifact: data.csv, text/csv" in chart_answer


async def test_a_text_model_gets_stand_ins_only(
    tmp_path: Path, server: ScriptedModelServer
) -> None:
    server.extend(
        tool_calls(tool_call("python__run", {"code": CHART}, id="call_chart")),
        text("The chart is drawn."),
    )
    config = write_config(tmp_path, server.base_url, accepts_images=False)
    async with agent_on(config, AgentConfig(reflection=False)) as agent:
        result = await agent.run("Draw a chart", run_id="run-txt")
    assert result.success, result.reason
    messages = server.chat_requests[1].messages
    assert image_messages(messages) == []
    assert all(isinstance(m.get("content"), str | None) for m in messages)
    answer = messages[-1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_chart"
    assert "artifact: chart.png, image/png, " in answer["content"]
    # The artifacts stay with the run (the workspace is kept by default).
    assert len(list((tmp_path / "runs" / "run-txt" / "artifacts" / "index").iterdir())) == 3


async def test_images_are_dropped_before_anything_is_summarised(
    tmp_path: Path, server: ScriptedModelServer
) -> None:
    server.extend(
        tool_calls(tool_call("python__run", {"code": CHART}, id="call_chart")),
        tool_calls(tool_call("python__run", {"code": "print(2)"}, id="call_two")),
        text("Done."),
    )
    config = write_config(tmp_path, server.base_url, accepts_images=True)
    # With the image (~1 000 tokens) the conversation passes 80 % of the budget; without it,
    # it does not: dropping the image is enough, and nothing is summarised.
    settings = AgentConfig(reflection=False, context_budget_tokens=1_500, keep_recent_turns=1)
    events: list[object] = []
    async with agent_on(config, settings) as agent:
        result = await agent.run("Draw a chart", run_id="run-fit", on_event=events.append)
    assert result.success, result.reason
    assert image_messages(server.chat_requests[1].messages) != []
    assert image_messages(server.chat_requests[2].messages) == []
    assert len(server.chat_requests) == 3, "no summary request was made"
    assert any(isinstance(e, Notice) and "image message" in e.message for e in events)


async def test_a_run_that_keeps_no_workspace_keeps_no_artifacts(
    tmp_path: Path, server: ScriptedModelServer
) -> None:
    server.extend(
        tool_calls(tool_call("python__run", {"code": CHART}, id="call_chart")),
        text("The chart is drawn."),
    )
    config = write_config(tmp_path, server.base_url, accepts_images=False)
    settings = AgentConfig(reflection=False, keep_workspace=False)
    async with agent_on(config, settings) as agent:
        result = await agent.run("Draw a chart", run_id="run-gone")
    assert result.success, result.reason
    answer = server.chat_requests[1].messages[-1]["content"]
    assert "artifact: chart.png, image/png" in answer, "the call left artifacts"
    assert not (tmp_path / "runs" / "run-gone" / "artifacts").exists()
    assert (tmp_path / "runs" / "run-gone" / "log.jsonl").exists(), "the run's log stays"


async def test_a_run_id_with_artifacts_only_can_still_start_a_run(
    tmp_path: Path, server: ScriptedModelServer
) -> None:
    """Tool calls outside an agent run keep artifacts under runs/<id>/ too; that is no run."""
    server.extend(text("Nothing to do."))
    config = write_config(tmp_path, server.base_url, accepts_images=False)
    async with (
        Platform.open(load_config(config, environ={}), pools=False) as platform,
        Agent.open(platform, AgentConfig(reflection=False)) as agent,
    ):
        called = await platform.gateway.call(
            ToolCall(id="c1", name="python.run", arguments={"code": CHART}, run_id="shared")
        )
        assert len(called.artifacts) == 3, called
        result = await agent.run("Anything?", run_id="shared")
        assert result.success, result.reason
        with pytest.raises(UsageError, match="already used"):
            agent.start("Again", run_id="shared")

"""A run's execution log read back: every event the run emitted, whatever its text holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.agent import Agent, AgentConfig, RunStatus, read_events
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, json_reply, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend, tool_output

from .conftest import write_config

pytestmark = pytest.mark.timeout(60)

# Line breaks to str.splitlines, not to JSON (which leaves them unescaped inside strings).
UNICODE_BREAKS = "\u2028\u2029\x85"


async def test_events_whose_text_holds_unicode_line_breaks_are_all_read_back(
    tmp_path: Path,
) -> None:
    """A model writing U+2028 (or NEL) cannot hide its calls or the run's end from the log."""
    script = [
        tool_calls(tool_call("files__write", {"path": "a.txt", "content": UNICODE_BREAKS})),
        text(f"done{UNICODE_BREAKS}"),
        json_reply({"complete": True, "reason": f"ok{UNICODE_BREAKS}"}),
    ]
    async with ScriptedModelServer(script) as server:
        config = load_config(write_config(tmp_path, server.base_url), environ={})
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform) as agent,
        ):
            result = await agent.run("Write a.txt.")
    assert result.status is RunStatus.COMPLETE
    assert read_events(tmp_path, result.run_id) == list(result.log)


async def test_a_tool_answer_naming_a_file_that_is_not_utf8_is_recorded(tmp_path: Path) -> None:
    """A tool listing a file named b"a\\xffb" answers "a\\udcffb" (JSON-escaped by the runner):
    the run goes on, and the model reads U+FFFD in its place."""
    script = [
        tool_calls(tool_call("files__list", {}), tool_call("files__read", {"path": "x"})),
        text("listed"),
    ]
    listing = tool_output({"entries": [{"path": "a\udcffb.txt"}]})
    failing = tool_output("no such file: a\udcffb.txt", ok=False)
    async with ScriptedModelServer(script) as server:
        config = load_config(write_config(tmp_path, server.base_url), environ={})
        async with (
            Platform.open(config, backend=ScriptedBackend([listing, failing])) as platform,
            Agent.open(platform, AgentConfig(reflection=False, memory=False)) as agent,
        ):
            result = await agent.run("List the files.")
    assert result.status is RunStatus.COMPLETE, result.reason
    answers = server.chat_requests[1].tool_results
    assert len(answers) == 2 and all("a\ufffdb.txt" in a["content"] for a in answers)
    assert read_events(tmp_path, result.run_id) == list(result.log)

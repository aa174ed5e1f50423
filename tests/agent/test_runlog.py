"""A run's execution log read back: every event the run emitted, whatever its text holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.agent import Agent, RunStatus, read_events
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, json_reply, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend

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

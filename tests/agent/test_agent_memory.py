"""Memory through the agent: a finished run recalled by a later run in another process, a
lesson from a failed run recalled for a similar goal, and principals kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.agent import AgentConfig, MemoryRecalled, MemoryStored, RunStatus
from orchestrator.testing import json_reply, server_error, text, tool_call, tool_calls

from .conftest import Setup, open_agent

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

DONE = json_reply({"complete": True, "reason": "done"})


def system_prompt(setup: Setup, index: int) -> str:
    return str(setup.server.chat_requests[index].messages[0]["content"])


async def test_a_run_is_recalled_by_a_later_run_in_another_process(setup: Setup) -> None:
    setup.server.extend(
        tool_calls(
            tool_call(
                "python__run",
                {"code": "print(max(p for p in range(2, 50) if all(p % d for d in range(2, p))))"},
            )
        ),
        text("The largest prime below 50 is 47."),
        DONE,
    )
    first = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "Find the largest prime below 50",
            "--config",
            str(setup.config),
            "--principal",
            "alice",
            "--no-prompt",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "STOCKADE_HOME": str(setup.home)},
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["answer"] == "The largest prime below 50 is 47."

    setup.server.extend(text("47, as last time."), DONE, text("I do not know."), DONE)
    async with open_agent(setup.config) as agent:
        again = await agent.run("Find the largest prime below 60", principal="alice")
        other = await agent.run("Find the largest prime below 60", principal="bob")
    assert again.success and other.success
    prompt = system_prompt(setup, 3)
    assert "Earlier run that succeeded" in prompt
    assert "The largest prime below 50 is 47." in prompt
    assert len(again.memory_ids) == 1
    recalled = [e for e in again.log if isinstance(e, MemoryRecalled)]
    assert recalled and recalled[0].memories[0].kind == "run"
    assert "Memories from earlier work" not in system_prompt(setup, 5), "bob recalls nothing"
    assert other.memory_ids == ()


async def test_a_lesson_from_a_failed_run_is_recalled(setup: Setup) -> None:
    setup.server.extend(tool_calls(tool_call("files__list", {})))
    async with open_agent(setup.config, AgentConfig(max_iterations=1)) as agent:
        failed = await agent.run("Count the files in the reports directory")
    assert failed.status is RunStatus.FAILED
    stored = [e.kind for e in failed.log if isinstance(e, MemoryStored)]
    assert stored == ["lesson", "run"]

    setup.server.extend(text("There are no reports."), DONE)
    async with open_agent(setup.config) as agent:
        result = await agent.run("Count the files in the reports folder")
    assert result.success
    prompt = system_prompt(setup, 1)
    assert (
        'Lesson from an earlier run on the goal "Count the files in the reports directory"'
        in prompt
    )
    assert "within 1 model turns (max_iterations)" in prompt


async def test_a_run_the_model_server_failed_leaves_no_lesson(setup: Setup) -> None:
    """A lesson tells later runs of the goal what to avoid; a server that did not answer is
    nothing they could avoid, so such a run is remembered as it ended, without one."""
    setup.server.inject(server_error(), server_error(), server_error())
    async with open_agent(setup.config) as agent:
        failed = await agent.run("Count the files in the reports directory")
    assert failed.status is RunStatus.FAILED
    assert failed.reason and failed.reason.startswith("no answer from the model")
    stored = [e.kind for e in failed.log if isinstance(e, MemoryStored)]
    assert stored == ["run"]


async def test_memory_off_recalls_and_remembers_nothing(setup: Setup) -> None:
    setup.server.extend(text("One."), text("Two."))
    async with open_agent(setup.config, AgentConfig(memory=False, reflection=False)) as agent:
        first = await agent.run("Say one")
        second = await agent.run("Say one")
    assert first.success and second.success
    assert not any(isinstance(e, MemoryStored | MemoryRecalled) for e in first.log + second.log)
    assert not (Path(setup.home) / "memory.db").exists()

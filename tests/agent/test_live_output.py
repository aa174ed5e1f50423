"""Live tool output seen by people and programs: the API's event stream (SSE), an MCP
client (progress notifications) and ``stockade run`` under tmux (issue 16, point 2).

Each runs a snippet printing a line every 0.3 s in a real container, driven by
the real ``openai`` SDK against the scripted model server (the agent runs), or by
the real ``mcp`` client, and checks the lines arrive one by one while the call runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from server.conftest import issue_tokens, serve

from orchestrator.agent import AgentConfig
from orchestrator.config import StockadeConfig
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing import ScriptedModelServer, json_reply, text, tool_call, tool_calls

from .conftest import Setup

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

COUNT = 8
LINES = f"import time\nfor i in range({COUNT}):\n    print(f'tick {{i}}')\n    time.sleep(0.3)\n"
ALLOW_ALL = "version: 1\ndefault: deny\nrules:\n  - {name: all, tools: '*', decision: allow}\n"


def spaced(times: list[float]) -> bool:
    """Every line came on its own, about 0.3 s after the one before."""
    return len(times) == COUNT and all(b - a > 0.15 for a, b in itertools.pairwise(times))


def first_seen(arrivals: list[tuple[float, str]]) -> list[float]:
    """When each ``tick N`` line was first complete in the accumulated text."""
    seen, times = "", list[float]()
    for at, piece in arrivals:
        seen += piece
        while len(times) < COUNT and f"tick {len(times)}\n" in seen:
            times.append(at)
    return times


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
async def test_an_api_client_sees_the_lines_on_the_run_event_stream(
    tmp_path: Path, images: ImageBuilder, no_leaks: None, runtime: str
) -> None:
    script = [tool_calls(tool_call("python__run", {"code": LINES})), text("counted")]
    async with ScriptedModelServer(script) as model:
        state = tmp_path / "state"
        state.mkdir()
        (state / "policy.yaml").write_text(ALLOW_ALL)
        config = StockadeConfig.model_validate(
            {
                "state_dir": state,
                "policy": state / "policy.yaml",
                "toolkits": ["toolkits.python"],
                "sandbox": {"runtime": runtime, "profiles": {"default": {"pool_size": 1}}},
                "model": {"base_url": model.base_url, "name": "m", "max_attempts": 1},
            }
        )
        tokens = issue_tokens(config)
        async with serve(config, agent=AgentConfig(reflection=False)) as served:
            served.tokens = tokens
            async with served.client("caller") as client:
                started = await client.post("/v1/runs", json={"goal": "count", "run_id": "r1"})
                assert started.status_code == 201, started.text
                arrivals: list[tuple[float, str]] = []
                types_seen: list[str] = []
                async with (
                    asyncio.timeout(120),
                    client.stream("GET", "/v1/runs/r1/events") as answer,
                ):
                    data: dict[str, Any] = {}
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            data = json.loads(line[6:])
                        elif not line and data:
                            types_seen.append(data["type"])
                            if data["type"] == "tool_output":
                                arrivals.append((time.monotonic(), data["text"]))
                            data = {}
    times = first_seen(arrivals)
    assert spaced(times), (times, arrivals)
    # The stream's output events come between the call's start and its end.
    first_output = types_seen.index("tool_output")
    assert types_seen.index("tool_call_started") < first_output
    assert first_output < types_seen.index("tool_call_finished")
    # The model still got one result per call: the run's log has no output events.
    log = (state / "runs" / "r1" / "log.jsonl").read_text()
    assert '"tool_output"' not in log


async def test_an_mcp_client_sees_the_lines_as_progress_notifications(
    tmp_path: Path, images: ImageBuilder, stockade_home: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(ALLOW_ALL)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\ntoolkits: [toolkits.python]\n"
        f"policy: {tmp_path / 'policy.yaml'}\n"
        "sandbox: {profiles: {default: {pool_size: 1}}}\n"
    )
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator", "mcp", "--config", str(config), "--principal", "alice"],
        env={"STOCKADE_HOME": str(stockade_home)},
    )
    arrivals: list[tuple[float, str]] = []
    values: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        arrivals.append((time.monotonic(), message or ""))
        values.append(progress)

    errors = (tmp_path / "mcp.stderr").open("w")
    try:
        async with (
            stdio_client(server, errlog=errors) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            hostile = LINES.replace("print(f'tick {i}')", "print(f'\\x1b[31mtick {i}\\x1b[0m')")
            result = await session.call_tool(
                "python.run", {"code": hostile}, progress_callback=on_progress
            )
    finally:
        errors.close()
    assert isinstance(result, types.CallToolResult) and result.is_error is False
    times = first_seen(arrivals)
    assert spaced(times), (times, arrivals, (tmp_path / "mcp.stderr").read_text()[-2000:])
    assert values == sorted(values)
    assert not any("\x1b" in message for _, message in arrivals)


def _tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=10)
    return done.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (setup.sh)")
def test_stockade_run_shows_a_live_tail_under_the_call_in_a_terminal(setup: Setup) -> None:
    setup.server.extend(
        tool_calls(tool_call("python__run", {"code": LINES.replace("0.3", "0.5")})),
        text("counted"),
        json_reply({"complete": True, "reason": "done"}),
    )
    session = f"stockade-live-{uuid.uuid4().hex[:8]}"
    socket = str(setup.home / "tmux.sock")
    env = {"STOCKADE_HOME": str(setup.home), "STOCKADE_CONFIG": str(setup.config)}
    exports = " ".join(f"{key}={value}" for key, value in env.items())
    command = f"{exports} {sys.executable} -m orchestrator run 'count' --run-id r-live; sleep 30"
    _tmux("-S", socket, "new-session", "-d", "-s", session, "-x", "160", "-y", "50", command)
    try:
        screens: list[tuple[float, str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = _tmux("-S", socket, "capture-pane", "-p", "-t", session)
            screens.append((time.monotonic(), screen))
            if "run complete" in screen:
                break
            time.sleep(0.1)
        final = screens[-1][1]
        assert "run complete" in final, final
        # Lines were on the screen while the call still ran (before its finished line).
        live = [screen for _, screen in screens if "│ tick" in screen and "→ allow" not in screen]
        assert live, final
        shown = {line.strip() for screen in live for line in screen.splitlines()}
        assert {f"│ tick {i}" for i in range(3)} <= shown, shown
        # A tail: never more than five output lines at once; erased once the call ended.
        assert all(screen.count("│ tick") <= 5 for _, screen in screens)
        assert "│ tick" not in final
        assert "python.run" in final and "→ allow · ok" in final
    finally:
        # Its own server (its own socket): nothing of anyone else's tmux is touched.
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, timeout=10)

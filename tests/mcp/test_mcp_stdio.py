"""``stockade mcp`` over stdio, driven by the official MCP client (``ClientSession``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import docker
import mcp_types as types
import pytest
from agent.conftest import containers_of  # the agent tests' leak helper
from mcp import Client, ClientSession
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from processes import command_line, live_parents

from orchestrator.approvals import ApprovalStore
from orchestrator.sandbox.images import ImageBuilder

pytestmark = pytest.mark.docker

POLICY = """\
version: 1
default: deny
rules:
  - {name: no-deleting, tools: files.delete, decision: deny, reason: nothing is deleted here}
  - {name: everything-else, tools: "*", decision: allow}
"""


CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


def _text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def _server_pid() -> int:
    """The pid of the ``stockade mcp`` server this test process started (its child)."""
    mine = os.getpid()
    (pid,) = [
        pid
        for pid, parent in live_parents().items()
        if parent == mine and b"mcp" in command_line(pid)
    ]
    return pid


async def test_tools_listed_called_and_a_denial_is_an_error_result(
    tmp_path: Path, images: ImageBuilder, docker_client: docker.DockerClient, stockade_home: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "toolkits: [toolkits.python, toolkits.files]\n"
        f"policy: {tmp_path / 'policy.yaml'}\n"
        "sandbox: {profiles: {default: {pool_size: 0}}}\n"
    )
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator", "mcp", "--config", str(config), "--principal", "alice",
              "--run-id", "mcp-run"],
        env={"STOCKADE_HOME": str(stockade_home)},
    )  # fmt: skip
    errors = (tmp_path / "mcp.stderr").open("w")
    try:
        async with (
            stdio_client(server, errlog=errors) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            server_pid = _server_pid()
            listed = await session.list_tools()
            ran = await session.call_tool("python.run", {"code": "print(6 * 7)"})
            denied = await session.call_tool("files.delete", {"path": "a.txt"})
            invalid = await session.call_tool("python.run", {"cod": "print(1)"})
            charted = await session.call_tool("python.run", {"code": CHART})
    finally:
        errors.close()
    tools = {tool.name: tool for tool in listed.tools}
    assert {"python.run", "files.read", "files.delete"} <= set(tools)
    assert tools["python.run"].input_schema["properties"]["code"]["type"] == "string"
    assert isinstance(ran, types.CallToolResult), (tmp_path / "mcp.stderr").read_text()
    assert ran.is_error is False, _text(ran)
    assert json.loads(_text(ran))["stdout"] == "42\n"
    assert ran.structured_content is not None and ran.structured_content["status"] == "ok"
    assert isinstance(denied, types.CallToolResult) and denied.is_error is True
    assert _text(denied).startswith("denied: ")
    assert "nothing is deleted here" in _text(denied)
    assert isinstance(invalid, types.CallToolResult) and invalid.is_error is True
    # A chart the call drew: named in the text, and shown as an image.
    assert isinstance(charted, types.CallToolResult) and charted.is_error is False
    text, image = charted.content
    assert (
        isinstance(text, types.TextContent) and "\nartifact: figure-1.png, image/png" in text.text
    )
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG\r\n\x1a\n")
    audit = stockade_home / "audit.jsonl"
    calls = [r for r in map(json.loads, audit.read_text().splitlines()) if r["event"] == "call"]
    assert {(r["principal"], r["run_id"]) for r in calls} == {("alice", "mcp-run")}
    assert [r["status"] for r in calls] == ["ok", "denied", "invalid_arguments", "ok"]
    # The server process removed its containers when the client closed it.
    assert containers_of(docker_client, server_pid) == []


GATED = """\
version: 1
default: deny
approval_timeout_s: 60
rules:
  - {name: python-needs-a-person, tools: python.run, decision: require_approval,
     reason: code runs only with a person's consent}
  - {name: everything-else, tools: "*", decision: allow}
"""


class _Answers:
    """An elicitation callback answering with the next of its answers."""

    def __init__(self, *answers: types.ElicitResult) -> None:
        self.answers = list(answers)
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        self.asked.append(params)
        return self.answers.pop(0)


async def test_over_stdio_the_client_is_asked_and_sees_progress_while_a_call_waits(
    tmp_path: Path, images: ImageBuilder, docker_client: docker.DockerClient, stockade_home: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(GATED)
    (tmp_path / "approvers.yaml").write_text("elicitation: {mode: form}\n")
    config = tmp_path / "stockade.yaml"
    config.write_text(
        "toolkits: [toolkits.python]\n"
        f"policy: {tmp_path / 'policy.yaml'}\n"
        f"approvals: {{approvers: {tmp_path / 'approvers.yaml'}}}\n"
        "sandbox: {profiles: {default: {pool_size: 0}}}\n"
    )
    # STOCKADE_HOME (the environment) wins over the file's state_dir.
    approvals_db = stockade_home / "approvals.db"
    answers = _Answers(
        types.ElicitResult(action="accept", content={"decision": "approve", "note": "go"}),
        types.ElicitResult(action="accept", content={"decision": "deny", "note": "not now"}),
        types.ElicitResult(action="cancel"),  # dismissed: someone else decides
    )
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async def decide_elsewhere() -> str:
        """Approve the pending request as bob, once there is one (another terminal would)."""
        async with asyncio.timeout(60):
            while True:
                if len(answers.asked) == 3:
                    store = ApprovalStore(approvals_db)
                    pending = await asyncio.to_thread(store.find)
                    if pending and messages:
                        (request,) = pending
                        await asyncio.to_thread(store.decide, request.id, approve=True, by="bob")
                        return request.id
                await asyncio.sleep(0.05)

    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator", "mcp", "--config", str(config), "--principal", "alice"],
        env={"STOCKADE_HOME": str(stockade_home)},
    )
    errors = (tmp_path / "mcp.stderr").open("w")
    try:
        async with (
            stdio_client(server, errlog=errors) as (read, write),
            ClientSession(read, write, elicitation_callback=answers) as session,
        ):
            await session.initialize()
            server_pid = _server_pid()
            approved = await session.call_tool("python.run", {"code": "print(6 * 7)"})
            denied = await session.call_tool("python.run", {"code": "print(1)"})
            decider = asyncio.create_task(decide_elsewhere())
            waited = await session.call_tool(
                "python.run", {"code": "print(2)"}, progress_callback=on_progress
            )
            request_id = await decider
    finally:
        errors.close()
    stderr = (tmp_path / "mcp.stderr").read_text()
    assert approved.is_error is False, stderr
    assert json.loads(_text(approved))["stdout"] == "42\n"  # approved, then run in a container
    assert denied.is_error is True and "not now" in _text(denied)
    assert waited.is_error is False, _text(waited)
    assert any(f"waiting for approval {request_id}" in m for m in messages), messages
    decided = ApprovalStore(approvals_db).find(None)
    assert [(r.status.value, r.decided_by) for r in decided] == [
        ("approved", "alice"),
        ("denied", "alice"),
        ("approved", "bob"),
    ]
    assert containers_of(docker_client, server_pid) == []


async def test_over_stdio_a_2026_client_answers_in_its_next_round(
    tmp_path: Path, stockade_home: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ndefault: deny\nrules:\n"
        "  - {name: deleting-needs-a-person, tools: files.delete, decision: require_approval,"
        " reason: deleting needs consent}\n"
        "  - {name: everything-else, tools: '*', decision: allow}\n"
    )
    (tmp_path / "approvers.yaml").write_text("elicitation: {mode: form}\n")
    config = tmp_path / "stockade.yaml"
    config.write_text(
        "toolkits: [toolkits.files]\n"
        f"policy: {tmp_path / 'policy.yaml'}\n"
        f"approvals: {{approvers: {tmp_path / 'approvers.yaml'}}}\n"
        "sandbox: {profiles: {default: {pool_size: 0}}}\n"
    )
    answers = _Answers(
        types.ElicitResult(action="accept", content={"decision": "deny", "note": "keep it"})
    )
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator", "mcp", "--config", str(config), "--principal", "alice"],
        env={"STOCKADE_HOME": str(stockade_home)},
    )
    async with Client(server, elicitation_callback=answers) as client:
        version = client.protocol_version
        denied = await client.call_tool("files.delete", {"path": "a.txt"})
    assert version == "2026-07-28"
    assert denied.is_error is True and "keep it" in _text(denied)
    (asked,) = answers.asked
    assert isinstance(asked, types.ElicitRequestFormParams) and "files.delete" in asked.message
    (decided,) = ApprovalStore(stockade_home / "approvals.db").find(None)
    assert (decided.status.value, decided.decided_by) == ("denied", "alice")

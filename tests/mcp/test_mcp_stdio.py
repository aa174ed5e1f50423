"""``stockade mcp`` over stdio, driven by the official MCP client (``ClientSession``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import docker
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import OWNER_LABEL, PLATFORM_LABEL, Owner

pytestmark = pytest.mark.docker

POLICY = """\
version: 1
default: deny
rules:
  - {name: no-deleting, tools: files.delete, decision: deny, reason: nothing is deleted here}
  - {name: everything-else, tools: "*", decision: allow}
"""


def _text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def _containers(client: docker.DockerClient) -> set[int]:
    found = client.api.containers(all=True, filters={"label": PLATFORM_LABEL})
    return {
        owner.pid
        for c in found
        if (owner := Owner.parse(c["Labels"].get(OWNER_LABEL, ""))) is not None
    }


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
    before = _containers(docker_client)
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
            listed = await session.list_tools()
            ran = await session.call_tool("python.run", {"code": "print(6 * 7)"})
            denied = await session.call_tool("files.delete", {"path": "a.txt"})
            invalid = await session.call_tool("python.run", {"cod": "print(1)"})
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
    audit = stockade_home / "audit.jsonl"
    calls = [r for r in map(json.loads, audit.read_text().splitlines()) if r["event"] == "call"]
    assert {(r["principal"], r["run_id"]) for r in calls} == {("alice", "mcp-run")}
    assert [r["status"] for r in calls][:2] == ["ok", "denied"]
    # The server process removed its containers when the client closed it.
    assert _containers(docker_client) <= before

"""Every entrance runs its tool calls on the cluster's hosts (issue 14, "Done means").

Agent runs and batches are covered by ``test_batch.py`` and ``test_ray_backend.py``;
here the other entrances, each with ``sandbox.engine: ray`` in one configuration:

- ``stockade tools call`` as a separate process (a second driver in the head's
  namespace, with the cluster's token in its environment);
- the HTTP API and MCP over HTTP (``/mcp``, the official ``mcp`` client), served
  by uvicorn on 127.0.0.1 inside the head's namespace (this thread is in it).

Each call must be counted by the hosts (``served``, as ``stockade hosts`` reads
it) and recorded in the one audit log, under the test policy. The configured
profiles use the tools image, which only the first engine has: the second host
refuses this orchestrator, so every call lands on host-a.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from server.conftest import POLICY, issue_tokens, serve  # the server tests' helpers

from orchestrator.cli import cli
from orchestrator.config import StockadeConfig
from orchestrator.sandbox.hosts import connect, list_hosts
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(300)]

SIX_BY_SEVEN = {"code": "print(6 * 7)"}


def _settings(state_dir: Path, address: str) -> dict[str, Any]:
    """The configuration every entrance reads: the test policy, the cluster, one warm slot."""
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = state_dir / "policy.yaml"
    policy.write_text(POLICY)
    return {
        "state_dir": str(state_dir),
        "policy": str(policy),
        "toolkits": ["toolkits.python"],
        "sandbox": {
            "engine": "ray",
            "ray": {"address": address},
            "profiles": {"default": {"pool_size": 1}},
        },
    }


async def _served() -> dict[str, int]:
    """Calls each host has answered so far, over every orchestrator (``stockade hosts``)."""
    return {view.name: view.served for view in await list_hosts("stockade")}


def _calls(audit_path: Path) -> list[dict[str, Any]]:
    lines = audit_path.read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "call"]


async def test_cli_api_and_mcp_calls_run_on_the_hosts_and_are_audited(
    cluster: RayCluster, images: ImageBuilder, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "state", cluster.address)
    config_file = tmp_path / "stockade.yaml"
    config_file.write_text(json.dumps(settings))  # JSON is YAML
    config = StockadeConfig.model_validate(settings)
    await asyncio.to_thread(connect, cluster.address, "stockade")
    before = await _served()

    # 1. The command line: its own process, its own orchestrator on the cluster.
    # (STOCKADE_HOME wins over the file's state_dir: the session's autouse fixture sets it.)
    done = await asyncio.to_thread(
        subprocess.run,
        ["nsenter", f"--net=/run/netns/{cluster.head_netns}", sys.executable, "-m",
         "orchestrator", "tools", "call", "python.run", "--args", json.dumps(SIX_BY_SEVEN),
         "--json", "--no-prompt", "--principal", "erin", "--config", str(config_file)],
        capture_output=True, text=True, check=False, timeout=240, env={**os.environ, "STOCKADE_HOME": settings["state_dir"]},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(json.loads(done.stdout)["output"])["stdout"] == "42\n"
    after_cli = await _served()
    assert after_cli["host-a"] - before["host-a"] == 1, (before, after_cli)

    # 2. and 3. The API and MCP over HTTP: one server, its platform on the cluster.
    tokens = issue_tokens(config)
    async with serve(config) as running:
        running.tokens = tokens
        async with running.client("caller") as client:
            answer = await client.post(
                "/v1/tool-calls",
                json={
                    "id": "api-1",
                    "name": "python.run",
                    "arguments": SIX_BY_SEVEN,
                    "run_id": "api",
                },
            )
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.json()["output"])["stdout"] == "42\n"
        http = httpx2.AsyncClient(
            headers=running.auth("caller"), trust_env=False, timeout=httpx2.Timeout(30, read=120)
        )
        async with (
            http,
            streamable_http_client(f"{running.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            ran = await session.call_tool("python.run", {"code": "print(7 * 8)"})
        assert ran.is_error is False, ran
        assert ran.structured_content is not None
        assert json.loads(ran.content[0].text)["stdout"] == "56\n"  # type: ignore[union-attr]
        after_http = await _served()
    assert after_http["host-a"] - after_cli["host-a"] == 2, (after_cli, after_http)
    assert after_http.get("host-b", 0) == before.get("host-b", 0)  # it refuses the tools image

    # One audit log, every entrance's call in it, each decided by the test policy.
    calls = _calls(config.audit_path)
    by_principal = {record["principal"]: record for record in calls}
    assert set(by_principal) >= {"erin", "alice"}, calls
    assert [r["tool"] for r in calls] == ["python.run"] * 3, calls
    for record in calls:
        assert (record["status"], record["decision"], record["rule"]) == (
            "ok",
            "allow",
            "everything-else",
        ), record
        assert record["image_digest"].startswith("sha256:"), record  # a real container
        assert record["host"] == "host-a", record  # the one host with the tools image
    assert sum(1 for r in calls if r["principal"] == "alice") == 2  # the API and MCP
    timeline = CliRunner().invoke(cli, ["audit", "timeline", str(config.audit_path)])
    assert timeline.output.count("on host host-a") == 3, timeline.output
    assert any(r["call_id"] == "api-1" for r in calls), calls
    # Both orchestrators kept their id on the hosts in the state directory, one after
    # the other in the same slot (a restart there would sweep that id's leftovers).
    slots = tmp_path / "state" / "ray-orchestrators"
    assert sorted(path.name for path in slots.iterdir()) == ["0.id"]

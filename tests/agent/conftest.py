"""Agent end-to-end fixtures: a platform from a stockade.yaml, the scripted model, an agent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.agent import Agent, AgentConfig, ApprovalWatch
from orchestrator.approvals import Approver
from orchestrator.config import StockadeConfig, load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.labels import OWNER_LABEL, Owner
from orchestrator.testing import ScriptedModelServer

# Everything is allowed but reading secrets; deletes wait for approval; python.run is
# rate limited to one call per run a minute.
TEST_POLICY = """\
version: 1
default: deny
rules:
  - {name: no-secrets, tools: files.read, when: {arg: path, glob: "secret*"}, decision: deny,
     reason: secrets are off limits}
  - {name: deletes, tools: files.delete, decision: require_approval, reason: deleting needs approval}
  - {name: rest, tools: "*", decision: allow}
rate_limits:
  - {name: python-per-run, tools: python.run, scope: run, rate: 1, per_s: 60, burst: 1}
"""


def allow_all_config(home: Path, base_url: str) -> StockadeConfig:
    """A platform under ``home`` that allows every call, with the files toolkit and the
    model at ``base_url`` (for tests of the loop itself, on the scripted sandbox)."""
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "policy.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    return StockadeConfig.model_validate(
        {
            "state_dir": home,
            "policy": policy,
            "toolkits": ["toolkits.files"],
            "model": {"base_url": base_url, "name": "test-model"},
        }
    )


@dataclass
class Setup:
    """Where a test's platform lives and what it talks to."""

    home: Path
    server: ScriptedModelServer
    config: Path

    def audit(self, event: str = "call") -> list[dict[str, Any]]:
        """The audit log's records of ``event`` (default: the calls' outcomes)."""
        path = self.home / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r.get("event") == event]

    def sandbox_wanted(self, run_id: str) -> bool:
        """Whether a call of ``run_id`` is about to take a sandbox (its intent is recorded)."""
        return any(r.get("run_id") == run_id for r in self.audit("intent"))


def write_config(
    home: Path,
    base_url: str,
    *,
    policy: str | None = None,
    toolkits: str = "[toolkits.files, toolkits.python, toolkits.shell]",
    model: str = "",
) -> Path:
    """A stockade.yaml in ``home``: state there, the scripted model, lexical memory."""
    lines = [
        f"state_dir: {home}",
        f"toolkits: {toolkits}",
        "sandbox: {profiles: {default: {pool_size: 1}}}",
        f"model: {{base_url: '{base_url}', name: test-model, timeout_s: 10, max_attempts: 3,"
        f" backoff_initial_s: 0.01, backoff_max_s: 0.05, retry_max_total_s: 30{model}}}",
        "memory: {embedder: {type: lexical}}",
    ]
    if policy is not None:
        (home / "policy.yaml").write_text(policy)
        lines.append("policy: policy.yaml")
    path = home / "stockade.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def setup(tmp_path: Path, images: object, no_leaks: None) -> AsyncIterator[Setup]:
    """The scripted model server and a configuration pointing at it (the test policy)."""
    async with ScriptedModelServer() as server:
        yield Setup(
            home=tmp_path,
            server=server,
            config=write_config(tmp_path, server.base_url, policy=TEST_POLICY),
        )


@asynccontextmanager
async def open_agent(
    config: Path,
    agent_config: AgentConfig | None = None,
    *,
    approvers: Sequence[Approver] = (),
    warm: bool = False,
    pools: bool = True,
) -> AsyncIterator[Agent]:
    """The platform the file configures, and an agent on it (approvals seen by a watch)."""
    watch = ApprovalWatch(approvers)
    loaded = load_config(config, environ={})
    async with (
        Platform.open(loaded, approvers=[watch], warm=warm, pools=pools) as platform,
        Agent.open(platform, agent_config, approvals=watch) as agent,
    ):
        yield agent


def containers_of(client: docker.DockerClient, pid: int) -> list[str]:
    """Ids of the Stockade containers process ``pid`` owns, in any state."""
    found = client.api.containers(all=True, filters={"label": OWNER_LABEL})
    return [c["Id"] for c in found if (o := Owner.parse(c["Labels"][OWNER_LABEL])) and o.pid == pid]

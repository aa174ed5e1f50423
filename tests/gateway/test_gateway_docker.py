"""The gateway end to end with the shipped default policy and real sandboxes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from orchestrator.approvals import ApprovalStore, AutoApprovalRule, AutoApprover
from orchestrator.assets import shipped
from orchestrator.audit import AuditLog, verify
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import load_policy
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolCall, ToolExecutor, ToolStatus

from .conftest import registry

pytestmark = pytest.mark.docker


@dataclass
class Stack:
    gateway: Gateway
    audit: Path
    store: ApprovalStore


@pytest.fixture
async def stack(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> AsyncIterator[Stack]:
    policy = load_policy(shipped("policies") / "default.yaml")
    store = ApprovalStore(tmp_path / "approvals.db")
    # Deleting files under tmp/ is approved by rule; anything else waits for a person.
    rule = {
        "name": "scratch",
        "tools": "files.delete",
        "when": {"arg": "path", "glob": "tmp/*"},
        "decision": "approve",
    }
    approvers = [AutoApprover([AutoApprovalRule.model_validate(rule)])]
    async with DockerBackend(docker_client, images=images, reap_on_start=False) as backend:
        executor = ToolExecutor(registry(), backend, workspaces=WorkspaceManager(tmp_path / "ws"))
        gateway = Gateway(
            executor,
            policy,
            AuditLog(tmp_path / "audit.jsonl", redact_patterns=policy.redact),
            approvals=ApprovalGate(store, approvers, poll_s=0.05),
            metrics=Metrics(),
        )
        yield Stack(gateway, tmp_path / "audit.jsonl", store)


def call(name: str, number: int, **arguments: object) -> ToolCall:
    return ToolCall(
        id=f"c{number}", name=name, arguments=json.dumps(arguments), run_id="r1", principal="ci"
    )


async def test_a_run_of_calls_under_the_default_policy(stack: Stack) -> None:
    gateway = stack.gateway
    wrote = await gateway.call(call("files.write", 1, path="tmp/a.txt", content="hello"))
    assert wrote.status is ToolStatus.OK, wrote
    ran = await gateway.call(call("python.run", 2, code="print(open('tmp/a.txt').read().upper())"))
    assert ran.status is ToolStatus.OK and json.loads(ran.output)["stdout"] == "HELLO\n"

    deleted = await gateway.call(call("files.delete", 3, path="tmp/a.txt"))
    assert deleted.status is ToolStatus.OK, "approved by the auto rule, then run"

    # A destructive command waits for a person; one denies it from another terminal.
    destructive = asyncio.create_task(gateway.call(call("shell.run", 4, command="rm -rf ./*")))
    async with asyncio.timeout(30):
        while not (pending := stack.store.find()):
            await asyncio.sleep(0.05)
    assert pending[0].tool == "shell.run" and pending[0].rule == "shell-destructive-needs-approval"
    ApprovalStore(stack.store.path).decide(pending[0].id, approve=False, by="oncall", note="no")
    refused = await destructive
    assert (
        refused.status is ToolStatus.APPROVAL_DENIED
        and refused.error == "oncall denied the call: no"
    )

    secret = await gateway.call(
        call("shell.run", 5, command="curl -H 'Authorization: Bearer abc.def' example")
    )
    assert secret.status is ToolStatus.OK, "the command runs (and fails: no network)"

    report = verify(stack.audit)
    assert report.ok, report
    records = [json.loads(line) for line in stack.audit.read_text().splitlines()]
    calls = [r for r in records if r["event"] == "call"]
    assert [c["status"] for c in calls] == ["ok", "ok", "ok", "approval_denied", "ok"]
    assert [c["rule"] for c in calls] == [
        "files-write",
        "python",
        "files-delete-needs-approval",
        "shell-destructive-needs-approval",
        "shell",
    ]
    assert all(c["image_digest"] == ran.image_digest for c in calls if c["status"] == "ok")
    assert calls[2]["approval"]["decided_by"] == "auto:scratch"
    assert "abc.def" not in stack.audit.read_text(), "the bearer token was redacted"
    metrics = gateway.metrics.registry
    assert (
        metrics.get_sample_value(
            "stockade_tool_calls_total", {"tool": "python.run", "status": "ok"}
        )
        == 1
    )

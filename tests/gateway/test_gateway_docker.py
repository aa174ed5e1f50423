"""The gateway end to end with the shipped default policy and real sandboxes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.approvals import ApprovalStore
from orchestrator.audit import verify
from orchestrator.config import load_config
from orchestrator.gateway import Gateway
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = pytest.mark.docker


@dataclass
class Stack:
    gateway: Gateway
    audit: Path
    store: ApprovalStore


@pytest.fixture
async def stack(images: ImageBuilder, no_leaks: None, tmp_path: Path) -> AsyncIterator[Stack]:
    """The platform as assembled from a stockade.yaml: shipped default policy, an approvers file."""
    approvers = tmp_path / "approvers.yaml"
    # Deleting files under tmp/ is approved by rule; anything else waits for a person.
    approvers.write_text(
        "auto:\n  - name: scratch\n    tools: files.delete\n"
        "    when: {arg: path, glob: 'tmp/*'}\n    decision: approve\n"
    )
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\ntoolkits: [toolkits.files, toolkits.python, toolkits.shell]\n"
        "approvals:\n  approvers: approvers.yaml\n"
        "sandbox:\n  profiles:\n    default: {pool_size: 1}\n"
    )
    async with Platform.open(load_config(config, environ={})) as platform:
        yield Stack(platform.gateway, platform.config.audit_path, platform.approvals)


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

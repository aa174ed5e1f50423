"""A gateway over the built-in toolkits, with the sandbox replaced by a script.

The sandbox itself is tested against a real engine elsewhere (and the gateway
end to end in ``test_gateway_docker.py``); here the subject is the path a call
takes before and after its sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.approvals import ApprovalStore, Approver
from orchestrator.audit import AuditLog
from orchestrator.config import builtin_profiles
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import RateLimiter, parse_policy
from orchestrator.testing.backend import ScriptedBackend, Step
from orchestrator.tools import ToolExecutor, ToolRegistry

POLICY = """
version: 1
default: deny
approval_timeout_s: 30
rules:
  - name: no-secrets-dir
    tools: files.*
    when: {arg: path, glob: "secrets/*"}
    decision: deny
    reason: the secrets directory is off limits
  - name: read
    tools: [files.read, files.list]
    decision: allow
    timeout_s: 5
  - name: delete-needs-approval
    tools: files.delete
    decision: require_approval
    reason: deleting needs a human
  - name: python
    tools: python.run
    decision: allow
    retry: {max_attempts: 3, max_total_s: 30}
  - name: python-flaky-tools
    tools: shell.run
    when: {arg: command, equals: flaky}
    decision: allow
    retry: {max_attempts: 3, retry_on_tool_error: true}
  - name: shell
    tools: shell.run
    decision: allow
    sandbox_profile: http
rate_limits:
  - {name: reads-per-run, tools: files.read, scope: run, rate: 1, per_s: 10, burst: 2}
redact:
  - '(?i)^(password|token)$'
  - 'sk-[A-Za-z0-9]{10,}'
"""


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry() -> ToolRegistry:
    tools = ToolRegistry()
    for name in ("toolkits.files", "toolkits.python", "toolkits.shell"):
        tools.load(name)
    return tools


class Harness:
    """A gateway, its scripted sandbox, its audit log and its approval store."""

    def __init__(
        self,
        root: Path,
        *,
        script: Iterable[Step] = (),
        approvers: Sequence[Approver] = (),
        policy: str = POLICY,
        clock: Clock | None = None,
    ) -> None:
        self.root = root
        self.backend = ScriptedBackend(script)
        self.clock = clock or Clock()
        self.policy = parse_policy(policy)
        self.audit_path = root / "audit.jsonl"
        self.store = ApprovalStore(root / "approvals.db")
        self.metrics = Metrics()
        self.gateway = Gateway(
            ToolExecutor(registry(), self.backend, profiles=builtin_profiles("runc").values()),
            self.policy,
            AuditLog(self.audit_path, redact_patterns=self.policy.redact),
            approvals=ApprovalGate(self.store, approvers, poll_s=0.01),
            metrics=self.metrics,
            rate_limiter=RateLimiter(self.policy.rate_limits, clock=self.clock),
            retry_wait_s=(0.001, 0.002),
        )

    def records(self, event: str = "call") -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def harness(tmp_path: Path) -> Callable[..., Harness]:
    """Build a :class:`Harness` in a fresh directory."""
    count = 0

    def build(**options: Any) -> Harness:
        nonlocal count
        count += 1
        root = tmp_path / f"h{count}"
        root.mkdir()
        return Harness(root, **options)

    return build

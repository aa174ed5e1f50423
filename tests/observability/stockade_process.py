"""A Stockade process for the observability tests: real gateway, scripted sandbox, /metrics.

``python stockade_process.py STATE_DIR`` opens the platform (shipped
toolkits, the policy below, an auto-approver, a scripted sandbox), serves
``/metrics`` on a free port of 127.0.0.1 with a discovery file in the state
directory, makes :data:`CALLS` and reports one agent run's events, prints
one JSON line (``url``) and serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from orchestrator.approvals import AutoApprovalRule, AutoApprover
from orchestrator.config import ModelSettings, StockadeConfig
from orchestrator.metrics import serve_metrics
from orchestrator.platform import Platform
from orchestrator.testing.backend import ScriptedBackend, tool_output
from orchestrator.tools import ToolCall

POLICY = """
version: 1
default: deny
rules:
  - {name: read, tools: files.read, decision: allow}
  - {name: python, tools: python.run, decision: allow, retry: {max_attempts: 1}}
  - {name: no-shell, tools: shell.run, decision: deny, reason: no shell here}
  - {name: deletes, tools: files.delete, decision: require_approval, reason: a human decides}
rate_limits:
  - {name: reads-per-run, tools: files.read, scope: run, rate: 1, per_s: 3600, burst: 3}
"""

CALLS = [
    ("files.read", {"path": "a.txt"}),
    ("files.read", {"path": "b.txt"}),
    ("files.read", {"path": "c.txt"}),
    ("files.read", {"path": "d.txt"}),  # the fourth read of the run: rate limited
    ("python.run", {"code": "print(1)"}),
    ("python.run", {"code": "raise SystemExit(1)"}),  # the script fails it
    ("files.delete", {"path": "old.txt"}),  # approved by the auto-approver
    ("shell.run", {"command": "ls"}),  # denied
    ("nosuch.tool", {}),  # unknown
]
"""The calls made, in order, all in run ``obs-run``."""

EXPECTED_STATUSES = {"ok": 5, "error": 1, "rate_limited": 1, "denied": 1, "unknown_tool": 1}
"""Tool calls by final status after :data:`CALLS`."""
EXPECTED_DECISIONS = {"allow": 6, "require_approval": 1, "deny": 1}
"""Policy decisions by decision (the unknown tool never reaches the policy)."""


def _events() -> list[SimpleNamespace]:
    """One agent run, as the agent loop reports it (the fields the metrics read)."""
    run = {"run_id": "obs-run", "at": 0.0}
    usage = SimpleNamespace(prompt_tokens=120, completion_tokens=30)
    return [
        SimpleNamespace(type="run_started", model="scripted-model", **run),
        SimpleNamespace(type="model_turn", usage=usage, duration_s=0.5, attempts=1, **run),
        SimpleNamespace(
            type="tool_call_finished", tool="python.run", status="ok", duration_s=0.01, **run
        ),
        SimpleNamespace(type="model_turn", usage=usage, duration_s=0.25, attempts=1, **run),
        SimpleNamespace(
            type="run_finished", status="complete", iterations=2, duration_s=1.5, **run
        ),
    ]


async def main(state: Path) -> None:
    policy = state / "policy.yaml"
    policy.write_text(POLICY)
    config = StockadeConfig(
        state_dir=state, policy=policy, model=ModelSettings(name="scripted-model")
    )
    backend = ScriptedBackend(
        [
            tool_output("a"),
            tool_output("b"),
            tool_output("c"),
            tool_output("1"),
            tool_output("boom", ok=False),
        ],
    )
    approve = AutoApprovalRule(name="deletes-ok", tools=["files.delete"], decision="approve")
    async with (
        Platform.open(config, backend=backend, approvers=[AutoApprover([approve])]) as platform,
        serve_metrics(
            platform.metrics,
            "127.0.0.1",
            0,
            targets_dir=config.metrics_targets_dir,
            labels={"command": "test"},
        ) as endpoint,
    ):
        for number, (name, arguments) in enumerate(CALLS):
            await platform.gateway.call(
                ToolCall(
                    id=f"obs-{number}",
                    name=name,
                    arguments=arguments,
                    run_id="obs-run",
                    principal="tester",
                )
            )
        for event in _events():
            platform.metrics.agent.observe(event)
        sys.stdout.write(json.dumps({"url": endpoint.url}) + "\n")
        sys.stdout.flush()
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

"""Dry run: a new policy replayed against the calls an audit log recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from orchestrator.audit.replay import replay
from orchestrator.cli import cli
from orchestrator.policy import Effect, parse_policy
from orchestrator.tools import ToolCall, ToolStatus

from .conftest import Harness

Build = Callable[..., Harness]

LENIENT = """
version: 1
default: deny
rules:
  - {name: everything, tools: ["python.run", "shell.run", "files.*"], decision: allow}
redact: ['(?i)^token$']
"""

STRICT = """
version: 1
default: deny
rules:
  - name: no-shell
    tools: shell.run
    decision: deny
    reason: no shell in production
  - name: python-small
    tools: python.run
    when: {arg: code, max_length: 20}
    decision: allow
  - name: python-large
    tools: python.run
    decision: require_approval
  - {name: read, tools: files.read, decision: allow}
"""


async def record_calls(h: Harness) -> None:
    calls = [
        ("python.run", {"code": "print(1)"}),
        ("python.run", {"code": "print('a much longer program')"}),
        ("shell.run", {"command": "ls"}),
        ("files.read", {"path": "a.txt"}),
        ("files.write", {"path": "b.txt", "content": "x", "token": "t0p"}),  # invalid: extra field
        ("files.list", {"path": "."}),
    ]
    for number, (name, arguments) in enumerate(calls):
        call = ToolCall(id=f"c{number}", name=name, arguments=arguments, run_id="r", principal="p")
        await h.gateway.call(call)


async def test_replay_lists_exactly_the_decisions_that_change(harness: Build) -> None:
    h = harness(policy=LENIENT)
    await record_calls(h)
    assert [r["status"] for r in h.records()].count(ToolStatus.INVALID_ARGUMENTS.value) == 1
    report = replay(parse_policy(STRICT), h.audit_path)
    assert report.chain.ok and (report.calls, report.skipped) == (5, 1)
    changed = [(c.tool, c.before, c.after, c.after_rule) for c in report.changes]
    assert changed == [
        ("python.run", Effect.ALLOW, Effect.REQUIRE_APPROVAL, "python-large"),
        ("shell.run", Effect.ALLOW, Effect.DENY, "no-shell"),
        ("files.list", Effect.ALLOW, Effect.DENY, None),
    ]
    assert report.summary() == {"allow -> deny": 2, "allow -> require_approval": 1}
    assert replay(parse_policy(LENIENT), h.audit_path).changes == [], "same policy, no change"


async def test_the_replay_command(harness: Build, tmp_path: Path) -> None:
    h = harness(policy=LENIENT)
    await record_calls(h)
    strict = tmp_path / "strict.yaml"
    strict.write_text(STRICT)
    runner = CliRunner()
    args = ["policy", "replay", str(strict), "--audit", str(h.audit_path)]

    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("replayed 5 recorded calls") and "1 never reached" in lines[0]
    assert lines[1] == "3 decisions would change:"
    assert "shell.run  principal=p run=r" in shown.output
    assert "allow (rule everything) -> deny (rule no-shell): no shell in production" in shown.output
    assert "allow (rule everything) -> deny (rule default)" in shown.output
    assert lines[-1] == "summary: allow -> deny: 2, allow -> require_approval: 1"

    as_json = json.loads(runner.invoke(cli, [*args, "--json"]).output)
    assert as_json["summary"] == {"allow -> deny": 2, "allow -> require_approval": 1}
    # Each call that ran has an intent before its outcome (c4 never reached the policy).
    assert [c["seq"] for c in as_json["changes"]] == [4, 6, 11]
    assert runner.invoke(cli, [*args, "--fail-on-change"]).exit_code == 1

    lines_of_log = h.audit_path.read_text().splitlines(keepends=True)
    del lines_of_log[5:7]  # someone removes the records of the shell call (intent, outcome)
    h.audit_path.write_text("".join(lines_of_log))
    tampered = runner.invoke(cli, args)
    assert "warning:" in tampered.output and "records may be missing" in tampered.output
    assert "2 decisions would change" in tampered.output

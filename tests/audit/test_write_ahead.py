"""Write-ahead audit: an intent is durable before a sandbox runs anything, one per attempt.

Measured before: the record was written after execution, so when that write
failed (disk full) the call had run with no record. Now a call whose intent
cannot be written does not run; a process killed mid-call leaves an intent
without outcome, which ``audit verify`` reports as such, not as tampering.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from orchestrator.approvals import ApprovalStore, AutoApprovalRule, AutoApprover
from orchestrator.audit import AuditLog, verify
from orchestrator.audit.replay import replay
from orchestrator.audit.timeline import call_timeline
from orchestrator.cli import cli
from orchestrator.config import builtin_profiles
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import parse_policy
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.testing.backend import ScriptedBackend, Step, tool_output
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolStatus

POLICY = """
version: 1
default: deny
rules:
  - {name: no-shell, tools: shell.run, decision: deny}
  - {name: delete, tools: files.delete, decision: require_approval}
  - name: python
    tools: python.run
    decision: allow
    retry: {max_attempts: 3, max_total_s: 30}
  - {name: files, tools: 'files.*', decision: allow}
rate_limits:
  - {name: lists, tools: files.list, scope: run, rate: 1, per_s: 3600, burst: 1}
"""


class CheckingBackend(ScriptedBackend):
    """A scripted sandbox that, as each call starts, reads the audit log for its intent."""

    def __init__(
        self, log: Path, script: list[Step] | None = None, then: Step | None = None
    ) -> None:
        super().__init__(script or [], then=then)
        self.log = log
        self.ran: list[str] = []
        self.unrecorded: list[str] = []
        self.current = ""  # the call the gateway is making (one at a time here)

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        call_id = self.current
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        intents = [json.loads(line) for line in lines if '"event":"intent"' in line]
        if not any(record.get("call_id") == call_id for record in intents):
            self.unrecorded.append(call_id)
        self.ran.append(call_id)
        return await super().execute(request, profile)


def registry() -> ToolRegistry:
    tools = ToolRegistry()
    for name in ("toolkits.files", "toolkits.python", "toolkits.shell"):
        tools.load(name)
    return tools


def build(log: Path, backend: ScriptedBackend, *, approvals: ApprovalGate | None = None) -> Gateway:
    # The approval store lives beside the test's directory, never on the (tiny) audit disk.
    store = ApprovalStore(log.parent.parent / f"approvals-{log.parent.name}.db")
    return Gateway(
        ToolExecutor(registry(), backend, profiles=builtin_profiles("runc").values()),
        parse_policy(POLICY),
        AuditLog(log),
        approvals=approvals or ApprovalGate(store),
        metrics=Metrics(),
        retry_wait_s=(0.001, 0.002),
    )


async def call(gw: Gateway, backend: ScriptedBackend, call_id: str, tool: str, **args: Any) -> Any:
    if isinstance(backend, CheckingBackend):
        backend.current = call_id
    return await gw.call(ToolCall(id=call_id, name=tool, arguments=args, run_id="r", principal="p"))


def records(log: Path, event: str | None = None) -> list[dict[str, Any]]:
    every = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in every if event is None or r["event"] == event]


def infra() -> InfrastructureError:
    return InfrastructureError("hiccup", code=ErrorCode.ENGINE_ERROR, op="test", retryable=True)


async def test_an_intent_is_on_record_before_the_sandbox_runs(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    backend = CheckingBackend(log)
    gw = build(log, backend)
    assert (await call(gw, backend, "c1", "python.run", code="1")).status is ToolStatus.OK
    assert backend.ran == ["c1"] and backend.unrecorded == []
    (intent,) = records(log, "intent")
    (outcome,) = records(log, "call")
    assert intent["seq"] < outcome["seq"]
    assert intent["attempt"] == 1 and intent["decision"] == "allow" and intent["rule"] == "python"
    assert intent["arguments"]["code"] == "1" and intent["sandbox_profile"] == "default"
    assert outcome["intents"] == [intent["seq"]]
    assert (
        gw.metrics.registry.get_sample_value("stockade_audit_records_total", {"event": "intent"})
        == 1
    )


async def test_one_intent_per_attempt_and_the_outcome_names_them_all(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    backend = CheckingBackend(log, [infra(), infra(), tool_output("done")])
    gw = build(log, backend)
    result = await call(gw, backend, "c1", "python.run", code="1")
    assert result.status is ToolStatus.OK
    intents = records(log, "intent")
    assert [i["attempt"] for i in intents] == [1, 2, 3]
    (outcome,) = records(log, "call")
    assert outcome["intents"] == [i["seq"] for i in intents] and outcome["retries"] == 2
    assert backend.unrecorded == []


async def test_calls_that_never_reach_a_sandbox_have_no_intent(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    backend = CheckingBackend(log)
    gw = build(log, backend)
    assert (await call(gw, backend, "d", "shell.run", command="ls")).status is ToolStatus.DENIED
    assert (await call(gw, backend, "l1", "files.list", path=".")).status is ToolStatus.OK
    limited = await call(gw, backend, "l2", "files.list", path=".")
    assert limited.status is ToolStatus.RATE_LIMITED
    assert [r["call_id"] for r in records(log, "intent")] == ["l1"]
    outcomes = {r["call_id"]: r for r in records(log, "call")}
    assert "intents" not in outcomes["d"] and "intents" not in outcomes["l2"]


async def test_the_intent_follows_the_approval(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    backend = CheckingBackend(log)
    store = ApprovalStore(tmp_path / "approvals.db")
    yes = AutoApprover(
        [
            AutoApprovalRule.model_validate(
                {"name": "ok", "tools": "files.delete", "decision": "approve"}
            )
        ]
    )
    gw = build(log, backend, approvals=ApprovalGate(store, [yes]))
    assert (await call(gw, backend, "x", "files.delete", path="a")).status is ToolStatus.OK
    events = [r["event"] for r in records(log) if r.get("call_id") == "x"]
    assert events == ["approval_requested", "approval_decided", "intent", "call"]
    (intent,) = records(log, "intent")
    assert intent["decision"] == "require_approval" and intent["approval"]["status"] == "approved"


async def test_a_full_disk_runs_no_call_without_its_intent(tiny_disk: Path) -> None:
    log = tiny_disk / "audit.jsonl"
    # Outcomes (with the tool's output) are larger than intents: the disk fills up either
    # between a call's intent and its outcome, or before an intent.
    backend = CheckingBackend(log, then=tool_output("y" * 2500))
    gw = build(log, backend)
    statuses: list[ToolStatus] = []
    for number in range(40):
        result = await call(gw, backend, f"c{number}", "python.run", code=f"#{number}" + "x" * 900)
        statuses.append(result.status)
        if result.error and "intent could not be written" in result.error:
            assert "No space left on device" in result.error
    assert ToolStatus.OK in statuses and ToolStatus.INFRASTRUCTURE_ERROR in statuses
    assert backend.unrecorded == [], "a call ran without its intent on record"
    assert set(backend.ran) <= {r["call_id"] for r in records(log, "intent")}
    # Once the log is full nothing else runs: at most the call whose outcome failed ran.
    first_failure = statuses.index(ToolStatus.INFRASTRUCTURE_ERROR)
    assert len(backend.ran) <= first_failure + 1
    report = verify(log)
    assert report.ok, report.problem
    # Every call that ran has its outcome, or is reported as an intent without one.
    outcomes = {r["call_id"] for r in records(log, "call")}
    unfinished = {intent.call_id for intent in report.open_intents}
    assert set(backend.ran) <= outcomes | unfinished


HANGING_CALL = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from orchestrator.audit import AuditLog
    from orchestrator.approvals import ApprovalStore
    from orchestrator.config import builtin_profiles
    from orchestrator.gateway import ApprovalGate, Gateway
    from orchestrator.policy import parse_policy
    from orchestrator.testing.backend import ScriptedBackend
    from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry

    class Hanging(ScriptedBackend):
        async def execute(self, request, profile):
            print("running", flush=True)
            await asyncio.Event().wait()  # the call never ends: the process is killed

    async def main() -> None:
        home = Path(sys.argv[1])
        tools = ToolRegistry()
        tools.load("toolkits.python")
        gw = Gateway(
            ToolExecutor(tools, Hanging(), profiles=builtin_profiles("runc").values()),
            parse_policy("version: 1\\nrules: [{name: py, tools: python.run, decision: allow}]"),
            AuditLog(home / "audit.jsonl"),
            approvals=ApprovalGate(ApprovalStore(home / "approvals.db")),
        )
        await gw.call(ToolCall(id="killed", name="python.run", arguments={"code": "1"}, run_id="r"))

    asyncio.run(main())
    """
)


def test_a_process_killed_mid_call_leaves_an_intent_verify_reports_apart(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(HANGING_CALL)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "running"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    log = tmp_path / "audit.jsonl"
    report = verify(log)
    assert report.ok, "a crash is not tampering"
    (intent,) = report.open_intents
    assert intent.call_id == "killed" and intent.tool == "python.run" and intent.attempt == 1

    runner = CliRunner()
    shown = runner.invoke(cli, ["audit", "verify", str(log)])
    assert shown.exit_code == 0, shown.output
    assert "chain intact" in shown.output
    assert "1 intent without an outcome (not tampering" in shown.output
    assert "call killed" in shown.output
    as_json = json.loads(runner.invoke(cli, ["audit", "verify", "--json", str(log)]).output)
    assert as_json["ok"] and [i["call_id"] for i in as_json["intents_without_outcome"]] == [
        "killed"
    ]
    (entry,) = call_timeline(log)
    assert entry.unfinished and entry.status == "unknown (no outcome recorded)"
    timeline = runner.invoke(cli, ["audit", "timeline", "--run", "r", str(log)])
    assert "killed  python.run  unknown (no outcome recorded)" in timeline.output
    assert "intent: attempt 1, allow by rule py" in timeline.output
    replayed = replay(parse_policy("version: 1\ndefault: deny\n"), log)
    assert replayed.calls == 1 and replayed.unfinished == 1
    assert [change.call_id for change in replayed.changes] == ["killed"]


def test_tampering_and_unfinished_calls_are_told_apart(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with AuditLog(log) as audit:
        audit.append({"event": "intent", "call_id": "a", "tool": "t", "attempt": 1})
        audit.append({"event": "call", "call_id": "a", "tool": "t", "intents": [0]})
        audit.append({"event": "intent", "call_id": "b", "tool": "t", "attempt": 1})
    assert verify(log).ok and [i.call_id for i in verify(log).open_intents] == ["b"]
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[2])  # the outcome of "a" removed
    report = verify(log)
    assert not report.ok and "removed" in report.problem
    assert [i.call_id for i in report.open_intents] == ["a"], "counted up to the bad line"
    shown = CliRunner().invoke(cli, ["audit", "verify", str(log)])
    assert shown.exit_code == 1

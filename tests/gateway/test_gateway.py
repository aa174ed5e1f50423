"""The gateway's path: validate, decide, limit, run with retries, record, count."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.audit import AuditLog, verify
from orchestrator.config import builtin_profiles
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.gateway import Gateway
from orchestrator.policy import parse_policy
from orchestrator.sandbox.egress import EgressConnection
from orchestrator.testing.backend import ScriptedBackend, tool_output
from orchestrator.tools import ToolCall, ToolExecutor, ToolStatus

from .conftest import POLICY, Harness, registry

Build = Callable[..., Harness]


def call(
    name: str, run: str | None = "run-1", principal: str | None = "alice", **args: object
) -> ToolCall:
    return ToolCall(id=f"c-{name}", name=name, arguments=args, run_id=run, principal=principal)


def infra(retryable: bool) -> InfrastructureError:
    return InfrastructureError(
        "engine hiccup", code=ErrorCode.ENGINE_ERROR, op="test", retryable=retryable
    )


async def test_an_allowed_call_runs_once_and_is_recorded_in_full(harness: Build) -> None:
    h = harness(script=[tool_output({"content": "hello"})])
    result = await h.gateway.call(call("files.read", path="notes.txt"))
    assert result.status is ToolStatus.OK, result.error
    assert result.output == '{"content": "hello"}'
    request, profile = h.backend.requests[0]
    assert profile.name == "default"
    assert request.timeout_s == 5, "the rule's timeout reaches the sandbox"
    (record,) = h.records()
    assert record["tool"] == "files.read"
    assert record["arguments"] == {"path": "notes.txt", "encoding": "text", "offset": 0}
    assert (record["decision"], record["rule"]) == ("allow", "read")
    assert record["rate_limit"] == {"allowed": True}
    assert record["sandbox_profile"] == "default"
    assert record["image_digest"] == "sha256:" + "0" * 64
    assert "host" not in record, "no sandbox host named on the local engine"
    assert (record["status"], record["exit_code"], record["retries"]) == ("ok", 0, 0)
    assert record["output_bytes"] == len('{"content": "hello"}')
    assert record["duration_s"] >= 0
    assert (record["run_id"], record["principal"], record["call_id"]) == (
        "run-1",
        "alice",
        "c-files.read",
    )
    assert h.sample("stockade_tool_calls_total", tool="files.read", status="ok") == 1
    assert h.sample("stockade_policy_decisions_total", decision="allow", rule="read") == 1
    assert h.sample("stockade_tool_call_duration_seconds_count", tool="files.read") == 1
    assert verify(h.audit_path).ok


async def test_the_rule_chooses_the_sandbox_profile(harness: Build) -> None:
    h = harness()
    result = await h.gateway.call(call("shell.run", command="ls"))
    assert result.status is ToolStatus.OK
    assert h.backend.requests[0][1].name == "http"
    assert h.records()[0]["sandbox_profile"] == "http"


@pytest.mark.parametrize(
    ("tool_call", "status", "message"),
    [
        (
            call("files.read", path="secrets/key"),
            ToolStatus.DENIED,
            "secrets directory is off limits",
        ),
        (call("files.write", path="a", content="b"), ToolStatus.DENIED, "no policy rule matches"),
        (call("files.read"), ToolStatus.INVALID_ARGUMENTS, "path"),
        (call("files.raed", path="a"), ToolStatus.UNKNOWN_TOOL, "did you mean files.read"),
    ],
)
async def test_refused_calls_never_reach_a_sandbox(
    harness: Build, tool_call: ToolCall, status: ToolStatus, message: str
) -> None:
    h = harness()
    result = await h.gateway.call(tool_call)
    assert result.status is status
    assert result.error is not None and message in result.error
    assert h.backend.requests == []
    (record,) = h.records()
    assert record["status"] == status.value
    assert "sandbox_profile" not in record


async def test_calls_that_never_reach_the_policy_are_recorded_without_a_decision(
    harness: Build,
) -> None:
    h = harness()
    await h.gateway.call(ToolCall(id="x", name="made.up", arguments='{"password": "hunter2"'))
    (record,) = h.records()
    assert "decision" not in record and record["tool"] == "made.up"
    assert record["detail"]["raw_arguments"].startswith('{"password"')
    # A name the model invented never becomes a metric label.
    assert h.sample("stockade_tool_calls_total", tool="unknown", status="unknown_tool") == 1


@pytest.mark.parametrize("encoded", [True, False])
async def test_a_value_a_key_rule_hides_is_hidden_everywhere_in_a_refused_calls_record(
    harness: Build, encoded: bool
) -> None:
    h = harness()
    arguments = {"path": {"not": "a path"}, "token": "hunter2-xyz", "password": 123456}
    sent = json.dumps(arguments) if encoded else arguments
    result = await h.gateway.call(ToolCall(id="x", name="files.read", arguments=sent))
    assert result.status is ToolStatus.INVALID_ARGUMENTS
    (record,) = h.records()
    assert record["detail"]["raw_arguments"]["token"] == "[REDACTED]"
    assert record["detail"]["raw_arguments"]["password"] == "[REDACTED]"
    assert record["detail"]["raw_arguments"]["path"] == {"not": "a path"}
    log = h.audit_path.read_text()
    assert "hunter2-xyz" not in log and "123456" not in log


async def test_rate_limits_answer_with_retry_after_and_refill_exactly(harness: Build) -> None:
    h = harness()
    read = call("files.read", path="a")
    assert (await h.gateway.call(read)).status is ToolStatus.OK
    assert (await h.gateway.call(read)).status is ToolStatus.OK, "burst of 2"
    limited = await h.gateway.call(read)
    assert limited.status is ToolStatus.RATE_LIMITED
    assert limited.retry_after_s == pytest.approx(10.0)
    assert limited.error is not None and "reads-per-run" in limited.error
    other_run = await h.gateway.call(call("files.read", run="run-2", path="a"))
    assert other_run.status is ToolStatus.OK, "each run has its own budget"
    h.clock.now += 10
    assert (await h.gateway.call(read)).status is ToolStatus.OK
    assert len(h.backend.requests) == 4
    assert h.records()[2]["rate_limit"] == {
        "allowed": False,
        "retry_after_s": 10.0,
        "limit": "reads-per-run",
    }
    assert h.sample("stockade_rate_limited_total", limit="reads-per-run") == 1


async def test_retryable_failures_are_retried_each_in_a_fresh_sandbox(harness: Build) -> None:
    h = harness(script=[infra(retryable=True), infra(retryable=True), tool_output("third time")])
    result = await h.gateway.call(call("python.run", code="print(1)"))
    assert result.status is ToolStatus.OK and result.output == "third time"
    assert len(h.backend.requests) == 3
    assert h.records()[0]["retries"] == 2
    assert h.sample("stockade_retries_total", operation="tool_call", reason="engine_error") == 2
    assert h.sample("stockade_retries_exhausted_total", operation="tool_call") == 0


async def test_attempts_are_bounded_by_the_rule(harness: Build) -> None:
    h = harness(script=[infra(retryable=True)] * 5)
    result = await h.gateway.call(call("python.run", code="print(1)"))
    assert result.status is ToolStatus.INFRASTRUCTURE_ERROR
    assert result.error is not None and "engine hiccup" in result.error
    assert len(h.backend.requests) == 3, "max_attempts: 3"
    assert h.sample("stockade_retries_exhausted_total", operation="tool_call") == 1


async def test_non_retryable_failures_and_tool_errors_are_not_retried(harness: Build) -> None:
    h = harness(script=[infra(retryable=False), tool_output("boom", ok=False)])
    first = await h.gateway.call(call("python.run", code="1"))
    assert first.status is ToolStatus.INFRASTRUCTURE_ERROR
    second = await h.gateway.call(call("python.run", code="1"))
    assert second.status is ToolStatus.ERROR and second.error == "boom"
    assert len(h.backend.requests) == 2
    assert [r["retries"] for r in h.records()] == [0, 0]


async def test_tool_errors_are_retried_only_when_the_rule_says_so(harness: Build) -> None:
    h = harness(script=[tool_output("flaky", ok=False), tool_output("fine")])
    result = await h.gateway.call(call("shell.run", command="flaky"))
    assert result.status is ToolStatus.OK and len(h.backend.requests) == 2


async def test_secrets_never_reach_the_audit_log(harness: Build) -> None:
    h = harness()
    await h.gateway.call(call("python.run", code="key = 'sk-abcdefghijklmnop'"))
    text = h.audit_path.read_text()
    assert "sk-abcdefghijklmnop" not in text and "[REDACTED]" in text


async def test_the_gateway_never_raises(harness: Build) -> None:
    h = harness(script=[RuntimeError("kaput")])
    result = await h.gateway.call(call("python.run", code="1"))
    assert result.status is ToolStatus.INFRASTRUCTURE_ERROR
    assert result.error is not None and "RuntimeError: kaput" in result.error
    assert h.records()[0]["status"] == "infrastructure_error"


async def test_an_unwritable_audit_log_stops_further_calls(harness: Build) -> None:
    h = harness()
    assert (await h.gateway.call(call("python.run", code="1"))).status is ToolStatus.OK
    assert h.sample("stockade_audit_failing") == 0
    h.audit_path.rename(h.root / "kept.jsonl")
    h.audit_path.mkdir()  # writes now fail, even for root
    # Write-ahead: the call's intent cannot be written, so it does not run, and says why.
    unrecorded = await h.gateway.call(call("python.run", code="2"))
    assert unrecorded.status is ToolStatus.INFRASTRUCTURE_ERROR
    assert unrecorded.error is not None
    assert "did not run: its intent could not be written" in unrecorded.error
    refused = await h.gateway.call(call("python.run", code="3"))
    assert refused.status is ToolStatus.INFRASTRUCTURE_ERROR
    assert refused.error is not None and "audit log" in refused.error
    assert len(h.backend.requests) == 1, "fail closed: nothing runs unrecorded"
    # The intent, the unrecorded call's outcome and the refused call's outcome.
    assert h.sample("stockade_audit_write_failures_total") == 3
    # The alert's gauge: failing closed until a record is written, calls or none.
    assert h.sample("stockade_audit_failing") == 1
    shutil.rmtree(h.audit_path)
    (h.root / "kept.jsonl").rename(h.audit_path)
    await h.gateway.call(call("python.run", code="4"))  # its refusal is written: healthy again
    assert h.sample("stockade_audit_failing") == 0
    assert (await h.gateway.call(call("python.run", code="5"))).status is ToolStatus.OK
    assert verify(h.audit_path).ok


def test_configuration_mistakes_fail_at_construction(tmp_path: Path) -> None:
    policy = parse_policy(POLICY)
    executor = ToolExecutor(
        registry(), ScriptedBackend(), profiles=builtin_profiles("runc").values()
    )
    log = AuditLog(tmp_path / "audit.jsonl", redact_patterns=policy.redact)
    with pytest.raises(ConfigError, match=r"rules\[2\].decision: rule 'delete-needs-approval'"):
        Gateway(executor, policy, log)
    no_approvals = parse_policy(POLICY.replace("require_approval", "deny"))
    with pytest.raises(ConfigError, match="does not redact"):
        Gateway(executor, no_approvals, AuditLog(tmp_path / "audit.jsonl"))
    unknown_profile = parse_policy(
        "version: 1\nrules:\n  - {name: r, tools: '*', decision: allow, sandbox_profile: gpu}\n"
    )
    with pytest.raises(ConfigError, match=r"rules\[0\].sandbox_profile: sandbox profile 'gpu'"):
        Gateway(executor, unknown_profile, log, policy_source="org.yaml")
    assert not (tmp_path / "audit.jsonl").exists(), "nothing recorded for a gateway that never ran"


def test_the_policy_is_recorded_when_the_gateway_starts(harness: Build) -> None:
    h = harness()
    (loaded,) = h.records("policy_loaded")
    assert loaded["detail"]["rules"] == 6 and len(loaded["detail"]["sha256"]) == 64


def test_each_run_gets_one_model_budget_from_the_policy(harness: Build) -> None:
    limited = POLICY + "model_limits: {max_model_calls_per_run: 2, max_tokens_per_run: 100}\n"
    h = harness(policy=limited)
    budget = h.gateway.model_budget("run-1")
    assert h.gateway.model_budget("run-1") is budget
    assert budget.start_call().allowed and budget.start_call().allowed
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used) == (False, "max_model_calls_per_run", 2)
    other = h.gateway.model_budget("run-2")
    other.add_tokens(100)
    assert other.start_call().limit == "max_tokens_per_run"
    h.gateway.end_run("run-1")
    assert h.gateway.model_budget("run-1").start_call().allowed, "a new run starts afresh"


async def test_egress_connections_are_recorded(harness: Build) -> None:
    events = (
        EgressConnection(
            host="api.example", port=443, allowed=True, address="192.0.2.7", bytes_in=90
        ),
        EgressConnection(
            host="169.254.169.254", port=80, allowed=False, reason="link-local address"
        ),
    )
    h = harness(script=[tool_output("fetched").model_copy(update={"egress": events})])
    result = await h.gateway.call(call("python.run", code="fetch()"))
    assert result.egress == events
    recorded = h.records()[0]["egress"]
    assert [(e["host"], e["allowed"]) for e in recorded] == [
        ("api.example", True),
        ("169.254.169.254", False),
    ]
    assert recorded[0]["bytes_in"] == 90 and recorded[1]["reason"] == "link-local address"
    assert "started" not in recorded[0], "only the documented fields"


async def test_a_refused_call_in_the_model_spelling_is_counted_under_the_tool(
    harness: Build,
) -> None:
    h = harness()
    await h.gateway.call(ToolCall(id="x", name="files__read", arguments={}))
    assert h.records()[0]["tool"] == "files.read"
    assert h.sample("stockade_tool_calls_total", tool="files.read", status="invalid_arguments") == 1

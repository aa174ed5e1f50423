"""Per attempt, the gateway's sandbox steps are their own spans: the intent, the container
acquired, the run in it; a backend that does not report the hand-over gets one execute span.

The traced gateway over the scripted sandbox backend (a failed attempt is its retryable
infrastructure error, as a container that died), spans to the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.approvals import ApprovalStore
from orchestrator.audit import AuditLog
from orchestrator.config import TracingSettings, builtin_profiles
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.gateway import ApprovalGate
from orchestrator.metrics import Metrics
from orchestrator.policy import parse_policy
from orchestrator.sandbox import ExecRequest, ExecResult, SandboxProfile
from orchestrator.sandbox.execution import container_acquired, on_acquired
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry
from orchestrator.tracing._gateway import TracedGateway
from orchestrator.tracing._tracer import RunTracer

pytestmark = pytest.mark.timeout(60)

POLICY = "version: 1\ndefault: allow\n"
GATE = {"stockade.policy", "stockade.rate_limit"}  # once per call, before the attempts


class ReportingBackend(ScriptedBackend):
    """Reports the container in hand, then plays its script (as Docker: acquire, then run)."""

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        container_acquired(from_pool=True)
        return await super().execute(request, profile)


def died() -> InfrastructureError:
    return InfrastructureError(
        "the container died", code=ErrorCode.CONTAINER_DIED, op="sandbox.execute", retryable=True
    )


async def traced_call(tmp_path: Path, backend: ScriptedBackend) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    tracer = RunTracer(TracingSettings(enabled=True), exporter=exporter)
    registry = ToolRegistry()
    registry.load("toolkits.python")
    gateway = TracedGateway(
        ToolExecutor(registry, backend, profiles=builtin_profiles("runc").values()),
        parse_policy(POLICY),
        AuditLog(tmp_path / "audit.jsonl"),
        approvals=ApprovalGate(ApprovalStore(tmp_path / "approvals.db")),
        metrics=Metrics(),
        retry_wait_s=(0.01, 0.01),
        tracer=tracer,
    )
    call = ToolCall(id="c1", name="python.run", arguments=json.dumps({"code": "print(1)"}))
    with tracer.run(run_id="r1", agent="a", model="m", goal="g", principal="p", resumed=False):
        result = await gateway.call(call)
    assert result.status.value == "ok", result
    tracer.shutdown()
    return list(exporter.get_finished_spans())


def steps(spans: list[ReadableSpan]) -> list[tuple[str, dict[str, Any]]]:
    (tool,) = [s for s in spans if s.name.startswith("execute_tool")]
    assert tool.context is not None
    under = [s for s in spans if s.parent and s.parent.span_id == tool.context.span_id]
    return [
        (s.name, dict(s.attributes or {})) for s in sorted(under, key=lambda s: s.start_time or 0)
    ]


async def test_each_attempt_has_its_intent_acquire_and_execute_spans(tmp_path: Path) -> None:
    spans = await traced_call(tmp_path, ReportingBackend([died()]))
    sandbox = [(n, a) for n, a in steps(spans) if n not in GATE]
    assert [n for n, _ in sandbox] == [
        "stockade.intent",
        "stockade.sandbox.acquire",
        "stockade.sandbox.execute",
        "stockade.intent",
        "stockade.sandbox.acquire",
        "stockade.sandbox.execute",
    ]
    first, second = sandbox[:3], sandbox[3:]
    assert [first[0][1]["stockade.attempt"], second[0][1]["stockade.attempt"]] == [1, 2]
    audited = [
        json.loads(line)
        for line in (tmp_path / "audit.jsonl").read_text().splitlines()
        if '"intent"' in line
    ]
    assert [a["stockade.audit.seq"] for n, a in sandbox if n == "stockade.intent"] == [
        r["seq"] for r in audited if r.get("event") == "intent"
    ]
    assert first[1][1]["stockade.sandbox.from_pool"] is True
    assert first[2][1]["error.type"] == "InfrastructureError"
    assert second[2][1]["stockade.tool.status"] == "ok"
    assert "stockade.sandbox.acquire_reported" not in second[2][1]
    # Acquire ends where execute begins, attempt by attempt.
    timed = sorted(
        (s for s in spans if s.name.startswith("stockade.sandbox.")),
        key=lambda s: s.start_time or 0,
    )
    for acquire, execute in zip(timed[::2], timed[1::2], strict=True):
        assert acquire.name.endswith("acquire") and execute.name.endswith("execute")
        assert acquire.end_time == execute.start_time
    assert on_acquired.get() is None  # nothing left watching


async def test_a_backend_that_does_not_report_gets_one_execute_span(tmp_path: Path) -> None:
    spans = await traced_call(tmp_path, ScriptedBackend())
    names = [n for n, _ in steps(spans) if n not in GATE]
    assert names == ["stockade.intent", "stockade.sandbox.execute"]
    execute = steps(spans)[-1][1]
    assert execute["stockade.sandbox.acquire_reported"] is False
    assert execute["stockade.tool.status"] == "ok"

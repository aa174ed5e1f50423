"""Captured content (``tracing.capture_content``) goes through the policy's ``redact`` patterns:
a secret in the goal, in a tool call's arguments (by value and by key, also inside the JSON
string of the model's tool call) and in the answer never reaches the OTLP receiver; the rest
of the content does.

``stockade run`` in a subprocess (the scripted model behind the real ``openai`` SDK, real
containers) exports to an OTLP/HTTP collector on 127.0.0.1; the test searches every byte the
collector received, then decodes the spans to see what did arrive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent.conftest import Setup, write_config
from agent.test_durable import finish, start
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestrator.testing import (
    HttpRequest,
    ScriptedModelServer,
    json_reply,
    serve_http,
    text,
    tool_call,
    tool_calls,
)

from .test_tracing_resume import attributes

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

POLICY = """\
version: 1
default: allow
redact: ["canary-[0-9a-f]+", "(?i)^password$"]
"""
SECRETS = (b"canary-0badf00d", b"canary-5a1d99", b"hunter2-xyz")
GOAL = "Keep notes; the key is canary-0badf00d, keep it safe"


async def test_a_secret_in_captured_content_never_reaches_the_receiver(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    bodies: list[bytes] = []

    def collector(request: HttpRequest) -> tuple[int, bytes]:
        if request.method == "POST" and request.path == "/v1/traces":
            bodies.append(request.body)
        return 200, b""

    answers = [
        tool_calls(
            tool_call(
                "files__write", {"path": "notes.txt", "content": "visible-text canary-5a1d99"}
            )
        ),
        # An argument the tool does not take, whose key is a secret's name.
        tool_calls(
            tool_call(
                "files__write",
                {"path": "creds.txt", "content": "visible-two", "password": "hunter2-xyz"},
            )
        ),
        text("Done: visible-answer, the key canary-5a1d99 is kept."),
        json_reply({"complete": True, "reason": "done"}),
    ]
    with serve_http(collector) as port:
        async with ScriptedModelServer(answers) as server:
            config = write_config(tmp_path, server.base_url, policy=POLICY)
            with config.open("a") as file:
                file.write(
                    f"tracing: {{enabled: true, capture_content: true, "
                    f"endpoint: 'http://127.0.0.1:{port}/v1/traces'}}\n"
                )
            setup = Setup(home=tmp_path, server=server, config=config)
            code, out, err = finish(start(setup, "run", GOAL, "--run-id", "r-redact", "--json"))
    assert code == 0, err
    assert json.loads(out)["status"] == "complete", out
    assert bodies, "nothing was exported"
    for body in bodies:
        for secret in SECRETS:
            assert secret not in body, secret

    spans = [
        span
        for body in bodies
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(attributes(span))

    (root,) = by_name["invoke_agent stockade"]
    assert "Keep notes; the key is [REDACTED], keep it safe" in root["gen_ai.input.messages"]
    assert "visible-answer, the key [REDACTED] is kept" in root["gen_ai.output.messages"]
    first, second = (
        json.loads(a["gen_ai.tool.call.arguments"]) for a in by_name["execute_tool files__write"]
    )
    assert first == {"path": "notes.txt", "content": "visible-text [REDACTED]"}
    assert second == {"path": "creds.txt", "content": "visible-two", "password": "[REDACTED]"}
    # The refusal quotes the value it refused: cut out there too, the rest of it kept.
    refusal = by_name["execute_tool files__write"][1]["gen_ai.tool.call.result"]
    assert 'password: Extra inputs are not permitted (got "[REDACTED]")' in refusal
    assert any(
        s.status.message.startswith("invalid arguments for files.write")
        and b"[REDACTED]" in s.status.message.encode()
        for s in spans
        if s.name == "execute_tool files__write"
    )
    # The model's own tool calls, in the conversation the later chats send: the JSON string
    # of their arguments is redacted by key too.
    last_chat = by_name["chat test-model"][-1]["gen_ai.input.messages"]
    assert "visible-two" in last_chat and "creds.txt" in last_chat
    assert '\\"password\\": \\"[REDACTED]\\"' in last_chat
    assert "visible-text [REDACTED]" in last_chat


def test_with_content_off_a_refusal_quoting_a_hidden_value_is_cut_from_the_span() -> None:
    """The span's status message is there whether or not content is captured."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator.config import TracingSettings
    from orchestrator.tools import ToolCall, ToolResult, ToolStatus
    from orchestrator.tracing import RunTracer

    exporter = InMemorySpanExporter()
    tracer = RunTracer(TracingSettings(enabled=True), redact=["(?i)^password$"], exporter=exporter)
    call = ToolCall(
        id="c1", name="files.write", arguments='{"path": "a.txt", "password": "hunter2-xyz"}'
    )
    refused = ToolResult(
        call_id="c1",
        name="files.write",
        status=ToolStatus.INVALID_ARGUMENTS,
        error='password: Extra inputs are not permitted (got "hunter2-xyz")',
    )
    with tracer.tool(call, "files.write") as span:
        tracer.tool_result(span, refused)
    tracer.shutdown()
    (finished,) = exporter.get_finished_spans()
    assert finished.status.description == (
        'password: Extra inputs are not permitted (got "[REDACTED]")'
    )
    assert finished.attributes is not None
    assert "gen_ai.tool.call.arguments" not in finished.attributes


def test_with_content_off_a_long_tool_error_is_cut_on_the_span() -> None:
    """A tool's error (its message and traceback, up to the profile's output limit) is not
    content: only its head goes on the span's status, so one failing call cannot make a
    batch of spans too big for the collector."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator.config import TracingSettings
    from orchestrator.tools import ToolCall, ToolResult, ToolStatus
    from orchestrator.tracing import RunTracer

    exporter = InMemorySpanExporter()
    tracer = RunTracer(TracingSettings(enabled=True), exporter=exporter)
    call = ToolCall(id="c1", name="python.run", arguments={"code": "raise"})
    failed = ToolResult(
        call_id="c1", name="python.run", status=ToolStatus.ERROR, error="x" * (1 << 20)
    )
    with tracer.tool(call, "python.run") as span:
        tracer.tool_result(span, failed)
    tracer.shutdown()
    (finished,) = exporter.get_finished_spans()
    assert finished.status.description is not None
    assert finished.status.description.startswith("xxxx")
    assert len(finished.status.description) <= 1100

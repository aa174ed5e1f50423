"""Traces of a real run land in a real OTLP backend (Phoenix) with the GenAI shape.

The run (``traced_run.py``) goes through the real ``openai`` SDK to the
scripted model server and runs its tool calls in real containers; Phoenix
receives the batch-exported spans over OTLP/HTTP and the test reads them back
through its API. With tracing off, no OpenTelemetry module is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent import RunStarted, read_events
from orchestrator.server.page._timeline import build_timeline
from orchestrator.testing import ScriptedModelServer

from .conftest import RUNNER, Phoenix
from .traced_run import SECRET_ARGUMENT, SECRET_GOAL, script

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
MODEL_CALLS = 5  # three tool turns, the answer, the reflection
SANDBOX_STEPS = {"stockade.intent", "stockade.sandbox.acquire", "stockade.sandbox.execute"}
STEPS = 5 + 1 + 6  # the gateway's step spans of the write, the denied read, the delete


def trace_of_run(home: Path, run_id: str) -> str:
    """The trace id the run log's ``run_started`` names."""
    started = [e for e in read_events(home, run_id) if isinstance(e, RunStarted)]
    assert len(started) == 1 and started[0].trace_id
    return started[0].trace_id


def spans_landed(phoenix: Phoenix, trace_id: str, at_least: int) -> list[dict[str, Any]]:
    """The trace's spans once Phoenix has stored them all (it ingests asynchronously)."""
    deadline = time.monotonic() + 60
    while True:
        spans = phoenix.spans(trace_id)
        if len(spans) >= at_least or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["context"]["span_id"]]


def names(spans: list[dict[str, Any]]) -> set[str]:
    return {s["name"] for s in spans}


def test_a_runs_trace_lands_in_phoenix_with_the_genai_shape(
    phoenix: Phoenix, tmp_path: Path, images: object
) -> None:
    result = phoenix.traced_run(tmp_path, capture=False)
    assert result["status"] == "complete", result
    run_id = result["run_id"]
    trace_id = trace_of_run(tmp_path, run_id)
    # One root, 5 chats, 3 tool calls, and the steps: write (policy, rate limit, intent,
    # acquire, execute), denied read (policy), approved delete (those of write and approval).
    spans = spans_landed(phoenix, trace_id, 1 + MODEL_CALLS + 3 + STEPS)

    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["invoke_agent stockade"]
    root = roots[0]
    attrs = root["attributes"]
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == "stockade"
    assert attrs["gen_ai.agent.id"] == run_id
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "test-model"
    assert attrs["stockade.run.status"] == "complete"

    under_root = children(spans, root)
    chats = [s for s in under_root if s["name"] == "chat test-model"]
    tools = {
        s["attributes"]["stockade.tool"]: s
        for s in under_root
        if s["name"].startswith("execute_tool ")
    }
    assert len(chats) == MODEL_CALLS
    assert len(under_root) == MODEL_CALLS + 3
    for chat in chats:
        a = chat["attributes"]
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "test-model"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert chat["span_kind"] in {"LLM", "CLIENT"}  # Phoenix names its kinds its own way
    assert attrs["gen_ai.usage.input_tokens"] == sum(
        c["attributes"]["gen_ai.usage.input_tokens"] for c in chats
    )

    assert set(tools) == {"files.write", "files.read", "files.delete"}
    audited = {
        r["tool"]: r["call_id"]
        for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())
        if r.get("event") == "call"
    }
    for tool, span in tools.items():
        a = span["attributes"]
        assert a["gen_ai.operation.name"] == "execute_tool"
        assert a["gen_ai.tool.name"] == tool.replace(".", "__")  # as the model called it
        assert a["gen_ai.tool.call.id"] == audited[tool]
        assert a["gen_ai.tool.type"] == "function"

    write = children(spans, tools["files.write"])
    assert names(write) == {"stockade.policy", "stockade.rate_limit", *SANDBOX_STEPS}
    assert len(write) == 5  # one attempt
    step = {s["name"]: s for s in write}
    intent, acquire, execute = (step[n] for n in sorted(SANDBOX_STEPS))
    assert intent["attributes"]["stockade.attempt"] == 1
    assert intent["attributes"]["stockade.audit.seq"] > 0
    # In order, back to back: the durable intent, then the container, then the run in it.
    assert intent["end_time"] <= acquire["start_time"]
    assert acquire["end_time"] == execute["start_time"]
    assert acquire["start_time"] < acquire["end_time"] < execute["end_time"]
    assert acquire["attributes"]["stockade.sandbox.profile"] == "default"
    assert acquire["attributes"]["stockade.sandbox.from_pool"] is False  # pool_size: 0
    assert execute["attributes"]["stockade.sandbox.profile"] == "default"
    assert execute["attributes"]["stockade.sandbox.image_digest"].startswith("sha256:")
    assert execute["attributes"]["stockade.tool.status"] == "ok"
    assert "stockade.sandbox.acquire_reported" not in execute["attributes"]
    assert all(children(spans, s) == [] for s in write)

    read = children(spans, tools["files.read"])
    assert names(read) == {"stockade.policy"}
    assert read[0]["attributes"]["stockade.policy.decision"] == "deny"
    assert read[0]["attributes"]["stockade.policy.rule"] == "no-secrets"
    assert tools["files.read"]["status_code"] == "ERROR"
    assert tools["files.read"]["attributes"]["error.type"] == "denied"

    delete = children(spans, tools["files.delete"])
    assert names(delete) == {
        "stockade.policy",
        "stockade.rate_limit",
        "stockade.approval",
        *SANDBOX_STEPS,
    }
    assert len(delete) == 6
    approval = next(s for s in delete if s["name"] == "stockade.approval")
    assert approval["attributes"]["stockade.approval.status"] == "approved"
    assert approval["attributes"]["stockade.approval.decided_by"] == "auto:ok"

    # Content is off by default: no content attribute, no argument, no goal anywhere.
    dumped = json.dumps(spans)
    assert not any(CONTENT_KEYS & set(s["attributes"]) for s in spans)
    assert SECRET_ARGUMENT not in dumped and SECRET_GOAL not in dumped

    # The trace id is in the JSON logs (every call's line) and on the timeline.
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    call_lines = [line for line in lines if line.get("call_id")]
    assert len(call_lines) == 3
    assert {line.get("trace_id") for line in call_lines} == {trace_id}
    timeline = build_timeline(read_events(tmp_path, run_id), (), {})
    assert timeline.trace_id == trace_id


def test_content_is_on_the_spans_only_when_opted_in(
    phoenix: Phoenix, tmp_path: Path, images: object
) -> None:
    result = phoenix.traced_run(tmp_path, capture=True)
    assert result["status"] == "complete", result
    trace_id = trace_of_run(tmp_path, result["run_id"])
    spans = spans_landed(phoenix, trace_id, 1 + MODEL_CALLS + 3 + STEPS)
    by_tool = {
        s["attributes"].get("stockade.tool"): s["attributes"]
        for s in spans
        if s["name"].startswith("execute_tool ")
    }
    assert SECRET_ARGUMENT in by_tool["files.write"]["gen_ai.tool.call.arguments"]
    assert "gen_ai.tool.call.result" in by_tool["files.write"]
    root = next(s for s in spans if s["parent_id"] is None)["attributes"]
    assert SECRET_GOAL in root["gen_ai.input.messages"]
    assert "Done: written, refused, deleted." in root["gen_ai.output.messages"]
    chats = [s["attributes"] for s in spans if s["name"].startswith("chat ")]
    assert all(SECRET_GOAL in c["gen_ai.input.messages"] for c in chats)
    assert all("gen_ai.output.messages" in c for c in chats)


async def test_tracing_off_imports_no_opentelemetry(tmp_path: Path, images: object) -> None:
    """The run's process (platform, agent, gateway, real containers; the model served by this
    process, whose FastAPI imports the OpenTelemetry API by itself) loads no OpenTelemetry."""
    async with ScriptedModelServer() as server:
        script(server)
        done = await _run_off(tmp_path, server.base_url)
    assert done["status"] == "complete", done
    assert done["opentelemetry"] == []
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines and not any("trace_id" in line for line in lines)
    started = [e for e in read_events(tmp_path, done["run_id"]) if isinstance(e, RunStarted)]
    assert started[0].trace_id is None


async def _run_off(home: Path, base_url: str) -> dict[str, Any]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUNNER),
        str(home),
        "off",
        "0",
        base_url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return result

"""A run killed (SIGKILL) and resumed keeps its trace: the resumed part is a second
``invoke_agent`` root in the same trace, marked resumed and linked to the first part's root.

The durable-run harness (``stockade run`` in a subprocess, the scripted model behind the real
``openai`` SDK, real containers) with tracing pointed at an OTLP/HTTP collector on 127.0.0.1;
the test decodes what both processes exported (protobuf) and checks the two parts' trees.
The first process exports its finished spans at once (a 50 ms batch delay), so its spans
are in before the kill; its own root span never ends, so never arrives.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import docker
import pytest
from agent.conftest import TEST_POLICY, Setup, write_config
from agent.test_durable import (  # the durable-run tests' harness
    Brain,
    _writes,
    checkpoint,
    docker_engine,
    kill,
    no_containers_of,
    resume,
    start,
    wait_until,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestrator.agent import RunStarted, read_events
from orchestrator.server.page._timeline import build_timeline
from orchestrator.testing import HttpRequest, ScriptedModelServer, serve_http
from orchestrator.tracing._tracer import RESUMES_LINK, first_part_span_id, run_trace_id

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

__all__ = ["docker_engine"]  # a fixture, used by name

_WAIT_S = 60.0


class Collector:
    """An OTLP/HTTP receiver: every span posted to ``/v1/traces``, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, request: HttpRequest) -> tuple[int, bytes]:
        if request.method == "POST" and request.path == "/v1/traces":
            exported = ExportTraceServiceRequest.FromString(request.body)
            with self._lock:
                for resource in exported.resource_spans:
                    for scope in resource.scope_spans:
                        self.spans.extend(scope.spans)
        return 200, b""

    def named(self, prefix: str) -> list[Any]:
        with self._lock:
            return [s for s in self.spans if s.name.startswith(prefix)]


def attributes(span: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        found[item.key] = getattr(value, value.WhichOneof("value"))
    return found


def span_id(number: int) -> bytes:
    return number.to_bytes(8, "big")


async def test_a_resumed_run_continues_its_trace_linked_to_the_first_part(
    tmp_path: Path,
    images: object,
    no_leaks: None,
    docker_engine: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the first part's spans go out at once
    collector = Collector()
    brain = Brain(turns=[], hold=("turn", 1))
    _writes(brain)  # write a.txt, write b.txt, answer
    run_id = "r-traced"
    trace_id = run_trace_id(run_id).to_bytes(16, "big")
    first_root = span_id(first_part_span_id(run_id))
    with serve_http(collector) as port:
        async with ScriptedModelServer(handler=brain) as server:
            config = write_config(tmp_path, server.base_url, policy=TEST_POLICY)
            with config.open("a") as out:
                out.write(
                    f"tracing: {{enabled: true, endpoint: 'http://127.0.0.1:{port}/v1/traces'}}\n"
                )
            setup = Setup(home=tmp_path, server=server, config=config)
            first = start(setup, "run", "Write a.txt, then b.txt", "--run-id", run_id)
            try:
                assert brain.arrived.wait(_WAIT_S), "the second model request never came"
                wait_until(
                    "iteration 1 committed",
                    lambda: (c := checkpoint(setup, run_id)) and c["iteration"] == 1
                    and not c["in_flight"],
                )  # fmt: skip
                wait_until("the first part's tool span exported", lambda: collector.named("exe"))
                kill(first)
            finally:
                brain.release.set()
                if first.poll() is None:
                    kill(first)
            before = len(collector.spans)
            code, result, err = resume(setup, run_id)
            brain.release.set()
    assert code == 0, err
    assert result["status"] == "complete", result
    first_part, second_part = collector.spans[:before], collector.spans[before:]

    # One trace over both processes.
    assert {s.trace_id for s in collector.spans} == {trace_id}
    # The killed part: its root never ended (not exported), its finished spans name it.
    assert not [s for s in first_part if s.name.startswith("invoke_agent")]
    (write_a,) = [s for s in first_part if s.name == "execute_tool files__write"]
    assert write_a.parent_span_id == first_root
    assert any(s.name == "chat test-model" and s.parent_span_id == first_root for s in first_part)
    assert {s.name for s in first_part if s.parent_span_id == write_a.span_id} >= {
        "stockade.intent",
        "stockade.sandbox.acquire",
        "stockade.sandbox.execute",
    }
    # The resumed part: a second root, marked and linked to the first one.
    (root,) = [s for s in second_part if s.name.startswith("invoke_agent")]
    assert root.parent_span_id == b"" and root.span_id != first_root
    root_attributes = attributes(root)
    assert root_attributes["stockade.run.resumed"] is True
    assert root_attributes["stockade.run.status"] == "complete"
    assert root_attributes["gen_ai.agent.id"] == run_id
    (link,) = root.links
    assert (link.trace_id, link.span_id) == (trace_id, first_root)
    assert attributes(link) == {"stockade.link.type": RESUMES_LINK}
    # Its model calls and the second write hang under it.
    under = [s for s in second_part if s.parent_span_id == root.span_id]
    assert "execute_tool files__write" in {s.name for s in under}
    assert any(s.name == "chat test-model" for s in under)
    assert all(s.parent_span_id for s in second_part if s is not root)

    # The run log names the trace once (run_started), and the timeline shows it.
    events = read_events(tmp_path, run_id)
    started = [e for e in events if isinstance(e, RunStarted)]
    assert [e.trace_id for e in started] == [trace_id.hex()]
    assert build_timeline(events, (), {}).trace_id == trace_id.hex()
    no_containers_of(docker_engine, first)

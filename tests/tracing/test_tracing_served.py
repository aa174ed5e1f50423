"""``stockade serve`` with tracing on: the run page shows the trace id, and the spans reach
the collector with the configured header when the server stops (the exporter is flushed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from server.conftest import issue_tokens, serve  # the server tests' helpers
from server.test_approval_page import sign_in
from server.test_runs_api import NO_REFLECTION, events_of, model_config

from orchestrator.testing import HttpRequest, ScriptedModelServer, serve_http, text
from orchestrator.testing.backend import ScriptedBackend

TOKEN_VARIABLE = "STOCKADE_TEST_OTLP_TOKEN"


async def test_the_run_page_shows_the_trace_and_the_spans_reach_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[HttpRequest] = []
    lock = threading.Lock()

    def collector(request: HttpRequest) -> tuple[int, bytes]:
        with lock:
            received.append(request)
        return 200, b""

    monkeypatch.setenv(TOKEN_VARIABLE, "Bearer otlp-test-token")
    with serve_http(collector) as port:
        async with ScriptedModelServer([text("the answer")]) as model:
            config = model_config(
                tmp_path / "state",
                model.base_url,
                tracing={
                    "enabled": True,
                    "endpoint": f"http://127.0.0.1:{port}/v1/traces",
                    "headers": {"Authorization": TOKEN_VARIABLE},
                },
            )
            tokens = issue_tokens(config)
            async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
                served.tokens = tokens
                async with served.client("caller") as api:
                    started = await api.post("/v1/runs", json={"goal": "answer", "run_id": "r1"})
                    assert started.status_code == 201, started.text
                    events = await events_of(api, "r1")
                async with served.client() as browser:
                    assert (await sign_in(browser, tokens["admin"])).status_code == 303
                    page = await browser.get("/ui/runs/r1")
    (run_started,) = [e for e in events if e.get("type") == "run_started"]
    trace_id = run_started["trace_id"]
    assert isinstance(trace_id, str) and len(trace_id) == 32
    assert page.status_code == 200, page.text
    assert f'<code id="run-trace-id">{trace_id}</code>' in page.text
    # Flushed when the platform closed: OTLP/HTTP protobuf carrying the run's trace id.
    exports = [r for r in received if r.method == "POST" and r.path == "/v1/traces"]
    assert exports, [r.path for r in received]
    assert {r.headers.get("authorization") for r in exports} == {"Bearer otlp-test-token"}
    assert {r.headers.get("content-type") for r in exports} == {"application/x-protobuf"}
    assert any(bytes.fromhex(trace_id) in r.body for r in exports)

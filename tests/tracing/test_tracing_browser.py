"""The run's trace id on its timeline page, as Debian's headless chromium shows it.

``stockade serve`` with tracing on (spans to an OTLP/HTTP collector on 127.0.0.1) runs a
goal started over the API; a browser signed in as the admin opens the run's page and reads
the trace id there, the one the run log's ``run_started`` names and the spans carry. The
browser fixture is the approval page tests' (throwaway profile, nothing reachable but
127.0.0.1, every chromium process checked gone afterwards).
"""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from server import test_approval_page_browser as _page_browser
from server.conftest import issue_tokens, serve
from server.test_approval_page_browser import Browser
from server.test_runs_api import NO_REFLECTION, events_of, model_config

from orchestrator.testing import HttpRequest, ScriptedModelServer, serve_http, text
from orchestrator.testing.backend import ScriptedBackend

# The approval page tests' fixtures: a throwaway headless chromium, and where screenshots go.
browser = _page_browser.browser
artifacts = _page_browser.artifacts


async def test_the_timeline_page_shows_the_runs_trace_id_in_chromium(
    tmp_path: Path, browser: Browser
) -> None:
    exported: list[bytes] = []

    def collector(request: HttpRequest) -> tuple[int, bytes]:
        if request.method == "POST" and request.path == "/v1/traces":
            exported.append(request.body)
        return 200, b""

    with serve_http(collector) as port:
        async with ScriptedModelServer([text("the answer")]) as model:
            config = model_config(
                tmp_path / "state",
                model.base_url,
                tracing={"enabled": True, "endpoint": f"http://127.0.0.1:{port}/v1/traces"},
            )
            tokens = issue_tokens(config)
            async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
                served.tokens = tokens
                async with served.client("caller") as api:
                    started = await api.post("/v1/runs", json={"goal": "answer", "run_id": "r1"})
                    assert started.status_code == 201, started.text
                    events = await events_of(api, "r1")
                (run_started,) = [e for e in events if e.get("type") == "run_started"]
                trace_id = run_started["trace_id"]
                assert isinstance(trace_id, str) and len(trace_id) == 32

                await browser.sign_in(served.url, tokens["admin"])
                await browser.open(f"{served.url}/ui/runs/r1")
                shown = await browser.find("#run-trace-id")
                assert await browser.do(lambda _: shown.text) == trace_id
                assert await browser.do(lambda _: shown.is_displayed())
                final = await browser.do(lambda d: d.find_element(By.ID, "final").text)
                assert "complete" in final
                await browser.screenshot("trace-id")
    # The spans that went out carry the id the page shows.
    assert any(bytes.fromhex(trace_id) in body for body in exported)

"""/healthz and /readyz: no token needed; readiness checks the platform's parts."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest

from orchestrator.config import StockadeConfig
from orchestrator.metrics import live_targets
from orchestrator.platform import Platform
from orchestrator.server import _health
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, serve


async def test_healthz_and_readyz_answer_without_a_token(served: Served) -> None:
    async with served.client() as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"engine", "pools", "audit", "approvals"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "ScriptedBackend" in body["checks"]["engine"]["detail"]


async def test_readyz_fails_when_the_audit_log_cannot_be_written(served: Served) -> None:
    audit = served.config.audit_path
    # Root ignores file modes: a directory where the log should be stops anyone appending.
    moved = audit.with_name("audit.moved")
    audit.rename(moved)
    audit.mkdir()
    try:
        async with served.client() as client:
            answer = await client.get("/readyz")
    finally:
        shutil.rmtree(audit)
        moved.rename(audit)
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "not_ready"
    assert body["checks"]["audit"]["ok"] is False
    assert body["checks"]["approvals"]["ok"] is True
    assert str(audit) not in answer.text


async def test_metrics_are_served_without_a_token(served: Served) -> None:
    async with served.client() as client:
        exposition = await client.get("/metrics")
    assert exposition.status_code == 200
    assert "stockade_tool_calls_total" in exposition.text
    assert "stockade_build_info" in exposition.text


async def test_metrics_serve_gives_the_server_a_metrics_port_of_its_own(
    config: StockadeConfig, scripted: ScriptedBackend
) -> None:
    """With metrics.serve, `stockade serve` serves /metrics as every long-running command
    does: on metrics.port, found through a discovery file (by Prometheus and `stockade
    metrics`), gone with the server. It served only /metrics of the API's port, so the
    deploy stack's target on 127.0.0.1:9464 was down."""
    settings = config.model_copy(
        update={"metrics": config.metrics.model_copy(update={"serve": True, "port": 0})}
    )
    targets = settings.metrics_targets_dir
    async with serve(settings, backend=scripted) as running:
        (url,) = live_targets(targets)
        async with running.client() as client:
            own = await client.get(url)
            api = await client.get("/metrics")
        listed = [json.loads(path.read_text()) for path in targets.glob("*.json")]
    assert own.status_code == 200 and "stockade_build_info" in own.text
    assert api.status_code == 200, "the API's port serves them either way"
    assert [group["labels"]["command"] for (group,) in listed] == ["serve"]
    assert live_targets(targets) == [] and list(targets.glob("*.json")) == []


async def test_a_flood_of_probes_runs_one_check_at_a_time(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes need no token, and each check asks the engine, SQLite and the audit log in
    threads of the pool tool calls share: fifty probes at once ran fifty checks."""
    ran = 0
    audit = _health._audit

    def counted(platform: Platform) -> _health.Check:
        nonlocal ran
        ran += 1
        time.sleep(0.05)  # a check takes a moment (the engine answers in ms)
        return audit(platform)

    monkeypatch.setattr(_health, "_audit", counted)
    async with served.client() as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
    assert [answer.status_code for answer in answers] == [200] * 50
    assert ran == 1

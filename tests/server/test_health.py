"""/healthz and /readyz: no token needed; readiness checks the platform's parts."""

from __future__ import annotations

import shutil

from .conftest import Served


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

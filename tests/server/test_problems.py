"""Every error is application/problem+json with a stable code, and tells nothing of the inside."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.server import Permission, ProblemCode, require
from orchestrator.server.page import SECURITY_HEADERS
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve, server_config

extension = APIRouter(prefix="/v1/broken")


@extension.get("/bug", dependencies=[Depends(require(Permission.READ_TOOLS))])
async def bug() -> None:
    raise RuntimeError("secret internals at /srv/stockade/state")


@extension.get("/engine")
@extension.get("/engine/{anything:path}")
async def engine() -> None:
    raise InfrastructureError(
        "/srv/stockade/approvals.db: database is locked",
        code=ErrorCode.APPROVALS,
        op="approvals.get",
        retryable=True,
    )


@pytest.fixture
async def extended(tmp_path: Path) -> AsyncIterator[Served]:
    config = server_config(tmp_path / "state")
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend(), routers=[extension]) as running:
        running.tokens = tokens
        yield running


async def test_a_bug_is_a_500_problem_without_a_trace(extended: Served) -> None:
    async with extended.client("caller") as client:
        answer = await client.get("/v1/broken/bug")
        unauthenticated = await client.get("/v1/broken/bug", headers={"Authorization": ""})
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "internal_error"
    assert body["type"] == "urn:stockade:problem:internal_error"
    assert "secret" not in answer.text and "Traceback" not in answer.text
    assert "/srv" not in answer.text
    assert unauthenticated.status_code == 401  # an added router is guarded like the API's own


async def test_an_infrastructure_error_is_a_503_without_paths(extended: Served) -> None:
    async with extended.client() as client:
        answer = await client.get("/v1/broken/engine")
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert answer.headers["retry-after"] == "1"
    assert "/srv" not in answer.text and "locked" not in answer.text


async def test_a_logged_request_path_cannot_forge_log_lines_or_reach_a_terminal(
    extended: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The path an error's log line names is the client's (decoded from %XX): it is quoted,
    so a carriage return cannot overwrite the line with a forged one and an escape sequence
    cannot reach the terminal that shows a text log."""
    with caplog.at_level(logging.ERROR, logger="orchestrator.server"):
        async with extended.client() as client:
            answer = await client.get("/v1/broken/engine/x%0dINFO%20forged%1b[2J")
    assert answer.status_code == 503
    logged = [r.getMessage() for r in caplog.records if "/v1/broken/engine/" in r.getMessage()]
    assert logged and all("\r" not in line and "\x1b" not in line for line in logged), logged


async def test_unknown_routes_and_methods_are_problems(served: Served) -> None:
    async with served.client("admin") as client:
        missing = await client.get("/v1/nothing-here")
        method = await client.delete("/v1/tools")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (method.status_code, method.json()["code"]) == (405, "method_not_allowed")
    for answer in (missing, method):
        assert answer.headers["content-type"] == "application/problem+json"
        assert set(answer.json()) == {"type", "title", "status", "detail", "code"}


def test_problem_codes_are_stable() -> None:
    # Clients branch on these: renaming one is an API change.
    assert {code.value for code in ProblemCode} == {
        "unauthenticated", "forbidden", "host_not_allowed", "self_approval_forbidden",
        "run_owned_by_another_principal", "not_found", "method_not_allowed", "run_id_in_use",
        "approval_not_pending", "call_id_in_use", "body_too_large", "json_too_deep", "body_timeout",
        "too_many_runs",
        "invalid_request", "invalid_arguments", "unavailable", "not_ready", "internal_error",
        "http_error",
    }  # fmt: skip


async def test_every_problem_is_inert_data_wherever_it_comes_from(extended: Served) -> None:
    """The page's handlers harden what they answer; the router's 404 and 405 under /ui, the
    body limits' 413 and 400, an API refusal and a 500 came without nosniff or a CSP."""
    big = {"content-type": "application/x-www-form-urlencoded"}
    deep, json_body = b"[" * 40 + b"]" * 40, {"content-type": "application/json"}
    async with extended.client("caller") as client:
        answers = [
            await client.get("/ui/nope", headers={"Accept": "text/html"}),
            await client.put("/ui/sign-in"),
            await client.post("/ui/sign-in", content=b"x" * (2 * 1024 * 1024), headers=big),
            await client.post("/ui/sign-in", content=deep, headers=json_body),
            await client.get("/v1/tools", headers={"Authorization": "Bearer stk_nope"}),
            await client.get("/v1/tools/<b>x</b>"),
            await client.get("/v1/broken/bug"),
        ]
        page = await client.get("/ui/sign-in")
    assert [answer.status_code for answer in answers] == [404, 405, 413, 400, 401, 404, 500]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json", answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, answer.url
    # The page's own answers keep the page's policy.
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert page.headers["content-security-policy"] == csp

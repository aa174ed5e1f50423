"""The OpenAPI document is checked in, in step with the application."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.server import render_openapi

from .conftest import Served

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_checked_in_document_is_the_applications() -> None:
    assert DOCUMENT.read_text() == render_openapi(), (
        "regenerate with: stockade serve --openapi > docs/openapi.json"
    )
    document = json.loads(DOCUMENT.read_text())
    assert document["info"]["version"] == "1"
    assert {"/v1/tools", "/v1/tools/{name}", "/v1/tool-calls", "/v1/approvals",
            "/v1/approvals/{request_id}", "/v1/approvals/{request_id}/approve",
            "/v1/approvals/{request_id}/deny", "/v1/runs", "/v1/runs/{run_id}",
            "/v1/runs/{run_id}/events", "/v1/runs/{run_id}/cancel",
            "/v1/runs/{run_id}/artifacts", "/v1/runs/{run_id}/artifacts/{artifact_id}",
            "/healthz", "/readyz"} == set(document["paths"])  # fmt: skip
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], path


def test_the_cli_prints_it() -> None:
    printed = CliRunner().invoke(cli, ["serve", "--openapi"])
    assert printed.exit_code == 0
    assert printed.output == render_openapi()


async def test_the_server_serves_it(served: Served) -> None:
    async with served.client() as client:
        served_document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert served_document == json.loads(render_openapi())
    assert docs.status_code == 404  # no pages that load scripts from elsewhere

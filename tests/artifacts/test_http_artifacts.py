"""``GET /v1/runs/{run_id}/artifacts/{id}`` on real containers: served to be saved, never rendered,
to the run's owner or an admin only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from orchestrator.config import StockadeConfig
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server import Role, TokenStore, create_app, uvicorn_config
from orchestrator.server._artifacts_api import content_disposition

from .helpers import PNG_WRITER, png

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

WRITE = (
    PNG_WRITER
    + """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/chart.png", "wb").write(png(8, 8))
open("outputs/evil.svg", "w").write('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
open("outputs/page.png", "w").write("<!doctype html><script>alert(document.cookie)</script>")
"""
)


@contextlib.asynccontextmanager
async def serve(config: StockadeConfig) -> AsyncIterator[str]:
    """The API on 127.0.0.1 (a free port) until the block ends; its URL."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn_config(
            app, host="127.0.0.1", port=0, shutdown_grace_s=1, access_log=False,
            configure_logging=False,
        )
    )  # fmt: skip

    async def run() -> None:
        with contextlib.suppress(SystemExit):
            await server.serve()

    task = asyncio.create_task(run())
    async with asyncio.timeout(60):
        while not server.started:
            if task.done():
                await task
                raise RuntimeError(f"no start: {app.state.startup_error!r}")
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    (tmp_path / "policy.yaml").write_text("version: 1\ndefault: allow\n")
    config = StockadeConfig.model_validate(
        {
            "state_dir": tmp_path,
            "policy": tmp_path / "policy.yaml",
            "toolkits": ["toolkits.python"],
            "sandbox": {"profiles": {"default": {"pool_size": 1}}},
        }
    )
    store = TokenStore(config.tokens_db)
    tokens = {
        who: store.create(principal=principal, roles=roles).token
        for who, principal, roles in (
            ("alice", "alice", [Role.CALLER]),
            ("mallory", "mallory", [Role.CALLER]),
            ("admin", "carol", [Role.ADMIN]),
        )
    }
    store.close()
    async with serve(config) as url:
        yield url, tokens


def client(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=60
    )


async def test_artifacts_are_served_as_attachments_to_the_run_owner_only(
    api: tuple[str, dict[str, str]],
) -> None:
    url, tokens = api
    async with client(url, tokens["alice"]) as alice:
        called = await alice.post(
            "/v1/tool-calls",
            json={"id": "c1", "name": "python.run", "arguments": {"code": WRITE}, "run_id": "r1"},
        )
        assert called.status_code == 200, called.text
        result = called.json()
        by_name = {a["name"]: a for a in result["artifacts"]}
        assert {n: a["media_type"] for n, a in by_name.items()} == {
            "chart.png": "image/png",
            "evil.svg": "image/svg+xml",
            "page.png": "text/plain",
        }
        listed = await alice.get("/v1/runs/r1/artifacts")
        assert listed.status_code == 200 and listed.json() == sorted(
            result["artifacts"], key=lambda a: a["name"]
        )

        chart = by_name["chart.png"]
        served = await alice.get(f"/v1/runs/r1/artifacts/{chart['id']}")
        assert served.status_code == 200
        assert served.content == png(8, 8)
        assert hashlib.sha256(served.content).hexdigest() == chart["sha256"]
        assert served.headers["content-type"] == "image/png"
        assert served.headers["content-disposition"] == content_disposition("chart.png")
        assert served.headers["content-disposition"].startswith('attachment; filename="chart.png"')
        for name in ("evil.svg", "page.png"):
            hostile = await alice.get(f"/v1/runs/r1/artifacts/{by_name[name]['id']}")
            assert hostile.status_code == 200
            headers = hostile.headers
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["content-security-policy"] == "sandbox; default-src 'none'"
            assert headers["content-disposition"].startswith("attachment;")
            assert not headers["content-type"].startswith("text/html")
        assert hostile.headers["content-type"] == "text/plain; charset=utf-8"

        unknown = await alice.get("/v1/runs/r1/artifacts/" + "0" * 32)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert (await alice.get("/v1/runs/r1/artifacts/..%2F..%2Fetc")).status_code in (404, 422)
        assert (await alice.get(f"/v1/runs/nobody/artifacts/{chart['id']}")).status_code == 404

    async with client(url, tokens["mallory"]) as mallory:
        refused = await mallory.get(f"/v1/runs/r1/artifacts/{chart['id']}")
        assert refused.status_code == 403
        assert refused.json()["code"] == "run_owned_by_another_principal"
        assert (await mallory.get("/v1/runs/r1/artifacts")).status_code == 403
    async with client(url, tokens["admin"]) as admin:
        assert (await admin.get(f"/v1/runs/r1/artifacts/{chart['id']}")).content == png(8, 8)


def test_the_disposition_names_only_the_last_part_safely() -> None:
    assert content_disposition('plots/a"b;c.png') == (
        "attachment; filename=\"a_b_c.png\"; filename*=UTF-8''a%22b%3Bc.png"
    )
    assert content_disposition("grafik-ü.png") == (
        "attachment; filename=\"grafik-_.png\"; filename*=UTF-8''grafik-%C3%BC.png"
    )

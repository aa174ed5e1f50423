"""The API on real containers: in this process, and as `stockade serve` stopped by SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest
from agent.conftest import containers_of  # the agent tests' leak helper

from orchestrator.config import StockadeConfig
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server import Role, TokenStore

from .conftest import issue_tokens, serve

pytestmark = pytest.mark.docker

CONFIG = """\
toolkits: [toolkits.python]
sandbox:
  profiles:
    default: {pool_size: 1}
"""
SIX_BY_SEVEN = {
    "id": "c1", "name": "python.run", "arguments": {"code": "print(6 * 7)"}, "run_id": "r1",
}  # fmt: skip


async def test_a_tool_call_through_the_api_runs_in_a_real_container(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> None:
    config = StockadeConfig.model_validate(
        {"state_dir": tmp_path / "state", "toolkits": ["toolkits.python"],
         "sandbox": {"profiles": {"default": {"pool_size": 1}}}}
    )  # fmt: skip
    tokens = issue_tokens(config)
    async with serve(config) as running:
        running.tokens = tokens
        async with running.client("caller") as client:
            answer = await client.post("/v1/tool-calls", json=SIX_BY_SEVEN)
            ready = await client.get("/readyz")
    result = answer.json()
    assert result["status"] == "ok", result
    assert json.loads(result["output"])["stdout"] == "42\n"
    assert result["image_digest"].startswith("sha256:")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["engine"]["detail"] == "answers"
    assert checks["pools"]["detail"].startswith("containers up: default")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_stockade_serve_answers_and_sigterm_removes_every_container(
    tmp_path: Path, images: ImageBuilder, docker_client: docker.DockerClient, stockade_home: Path
) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text(CONFIG)
    store = TokenStore(stockade_home / "tokens.db")
    token = store.create(principal="alice", roles=[Role.CALLER]).token
    store.close()
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--config", str(config),
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.1)
            answer = client.post(
                "/v1/tool-calls",
                json={**SIX_BY_SEVEN, "principal": "root"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
        assert answer.json()["status"] == "ok", answer.text
        assert containers_of(docker_client, server.pid)  # the warm pool
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then lets SIGTERM end the process as it would have.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
        leaked = containers_of(docker_client, server.pid)
        for container in leaked:
            docker_client.api.remove_container(container, force=True)
    assert leaked == []
    records = [
        json.loads(line) for line in (stockade_home / "audit.jsonl").read_text().splitlines()
    ]
    (call,) = [r for r in records if r["event"] == "call"]
    assert call["principal"] == "alice"

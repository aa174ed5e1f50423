"""The HTTP API served by uvicorn on 127.0.0.1 (a free port), in the test's own event loop.

Most tests run the platform on the scripted sandbox backend (the subject is
the API and what it hands the gateway); ``test_serve_docker.py`` runs real
containers. Tokens are issued into the server's database before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

from orchestrator.agent import AgentConfig
from orchestrator.config import StockadeConfig
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.server import Role, TokenStore, create_app, uvicorn_config
from orchestrator.testing.backend import ScriptedBackend

POLICY = """\
version: 1
default: deny
approval_timeout_s: 30
rules:
  - name: shell-needs-approval
    tools: shell.run
    decision: require_approval
    reason: shell commands need a person
  - name: no-deleting
    tools: files.delete
    decision: deny
    reason: nothing is deleted here
  - name: everything-else
    tools: "*"
    decision: allow
rate_limits:
  - {name: writes-per-principal, tools: files.write, scope: principal, rate: 1, per_s: 3600,
     burst: 2}
redact: ['(?i)^(password|token)$', 'sk-[A-Za-z0-9_-]{20,}']
"""

# name: (principal, roles)
PEOPLE: dict[str, tuple[str, tuple[Role, ...]]] = {
    "caller": ("alice", (Role.CALLER,)),
    "approver": ("bob", (Role.APPROVER,)),
    "admin": ("carol", (Role.ADMIN,)),
    "both": ("dave", (Role.CALLER, Role.APPROVER)),
}


def server_config(state_dir: Path, **server: Any) -> StockadeConfig:
    """A configuration in ``state_dir`` with the test policy; ``server`` sets server fields."""
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = state_dir / "policy.yaml"
    policy.write_text(POLICY)
    return StockadeConfig.model_validate(
        {"state_dir": state_dir, "policy": policy, "server": server}
    )


@dataclass
class Served:
    """A running server and what a test needs to talk to it."""

    url: str
    app: FastAPI
    config: StockadeConfig
    backend: SandboxBackend | None
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of one of :data:`PEOPLE`."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self, who: str | None = None) -> httpx.AsyncClient:
        """An HTTP client of this server (as ``who``, or without a token)."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self.auth(who) if who else None,
            trust_env=False,  # never a proxy: 127.0.0.1 only
            timeout=30,
        )

    def audit_records(self) -> list[dict[str, Any]]:
        """Every record of the audit log so far."""
        lines = self.config.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines]


@contextlib.asynccontextmanager
async def serve(
    config: StockadeConfig,
    *,
    backend: SandboxBackend | None = None,
    routers: Sequence[APIRouter] = (),
    agent: AgentConfig | None = None,
) -> AsyncIterator[Served]:
    """Run the API for ``config`` on 127.0.0.1 until the block ends."""
    app = create_app(config, backend=backend, routers=routers, agent=agent)
    server = uvicorn.Server(
        uvicorn_config(
            app,
            host="127.0.0.1",
            port=0,
            shutdown_grace_s=1,
            access_log=False,
            configure_logging=False,
        )
    )

    async def run() -> None:
        # uvicorn exits (SystemExit) when the start fails; a task must not raise that.
        with contextlib.suppress(SystemExit):
            await server.serve()

    task = asyncio.create_task(run())
    async with asyncio.timeout(60):
        while not server.started:
            if task.done():
                await task
                error = getattr(app.state, "startup_error", None)
                raise RuntimeError(f"the server did not start: {error!r}")
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(url=f"http://127.0.0.1:{port}", app=app, config=config, backend=backend)
    finally:
        server.should_exit = True
        await task


def issue_tokens(config: StockadeConfig) -> dict[str, str]:
    """A token for each of :data:`PEOPLE`, in the server's database."""
    store = TokenStore(config.tokens_db)
    try:
        return {
            who: store.create(principal=principal, roles=roles).token
            for who, (principal, roles) in PEOPLE.items()
        }
    finally:
        store.close()


@pytest.fixture
def config(tmp_path: Path) -> StockadeConfig:
    """The test configuration, state in the test's own directory."""
    return server_config(tmp_path / "state")


@pytest.fixture
def scripted() -> ScriptedBackend:
    """A sandbox that answers every call with ``"ok"`` at once."""
    return ScriptedBackend()


@pytest.fixture
async def served(config: StockadeConfig, scripted: ScriptedBackend) -> AsyncIterator[Served]:
    """The API on the scripted backend, with a token for each of :data:`PEOPLE`."""
    tokens = issue_tokens(config)
    async with serve(config, backend=scripted) as running:
        running.tokens = tokens
        yield running

"""The application factory: one platform for the server's lifetime, the routers, the guards.

``create_app`` builds the FastAPI application without opening anything; its
lifespan opens the one :class:`~orchestrator.platform.Platform` (pools
warmed before the first request is accepted) and the token store, and
closes both when the server stops. Every resource is a router: the API's
own (:data:`API_ROUTERS`: tools, approvals, runs, artifacts), the approval
and run pages, ``/metrics``, MCP, plus whatever the caller adds with
``routers=``, each using :func:`~orchestrator.server.require` and
:data:`~orchestrator.server.State` like the built-in ones. With
``metrics.serve`` the metrics are also served on ``metrics.port``, with a
discovery file, as every long-running command serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from orchestrator.agent import Agent, AgentConfig, ApprovalWatch
from orchestrator.approvals import Approver
from orchestrator.config import LoadedConfig, ServerSettings, StockadeConfig
from orchestrator.metrics import render
from orchestrator.platform import Platform, serving_metrics
from orchestrator.runowners import RunOwners
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.server import _approvals_api, _artifacts_api, _health, _runs_api, _tools_api
from orchestrator.server._bind import check_bind, is_loopback_host
from orchestrator.server._calls import CallsInFlight
from orchestrator.server._limits import RequestLimits
from orchestrator.server._mcp_http import serve_mcp
from orchestrator.server._problems import (
    PROBLEM_MEDIA_TYPE,
    CancelledAsUnavailable,
    install_problem_handlers,
)
from orchestrator.server._roles import Identity, Role
from orchestrator.server._runs import Runs
from orchestrator.server._state import ServerState
from orchestrator.server._tokens import TokenStore
from orchestrator.server.page import page_router

__all__ = ["API_ROUTERS", "API_VERSION", "create_app", "render_openapi", "uvicorn_config"]

_log = logging.getLogger(__name__)

API_VERSION = "1"
"""The API's version; paths carry it as ``/v1``."""

API_ROUTERS: tuple[APIRouter, ...] = (
    _tools_api.router,
    _approvals_api.router,
    _runs_api.router,
    _artifacts_api.router,
)
"""The resources under ``/v1`` every server has."""

_DESCRIPTION = """\
Sandboxed tool calls under policy, their approvals, and agent runs.

Every request but the probes (`/healthz`, `/readyz`) and this document needs an API token
(`Authorization: Bearer stk_…`, from `stockade tokens create`). A token acts for one principal,
the one policies, rate limits, approvals and the audit log see, and carries roles: `caller`
(tools and runs), `approver` (approvals), `viewer` (reads its principal's runs),
`admin` (everything). Errors are
`application/problem+json` with a stable `code`.
"""


def _local_identity(settings: ServerSettings) -> Identity | None:
    """Who a request without a token acts as: the user running a loopback server, if allowed."""
    if settings.unauthenticated_loopback and is_loopback_host(settings.host):
        return Identity(principal=getpass.getuser(), roles=frozenset({Role.ADMIN}), token_id=None)
    return None


def _loaded(config: LoadedConfig | StockadeConfig) -> LoadedConfig:
    if isinstance(config, LoadedConfig):
        return config
    return LoadedConfig(config=config, file=None, sources={})


def create_app(
    config: LoadedConfig | StockadeConfig,
    *,
    backend: SandboxBackend | None = None,
    approvers: Sequence[Approver] = (),
    routers: Sequence[APIRouter] = (),
    agent: AgentConfig | None = None,
) -> FastAPI:
    """The HTTP API over the platform ``config`` describes.

    Nothing is opened until the application starts (its lifespan): then the
    platform (with ``backend`` instead of the configured one, if given, and
    ``approvers`` after the configured ones) and the token store; a server
    configured for a non-loopback address with no active token refuses to
    start (the exception that stopped a start is kept in
    ``app.state.startup_error``). ``routers`` are included after the API's own.
    When a model is configured (``model.base_url``), an agent (settings
    ``agent``) runs the runs started through ``/v1/runs``; its
    :class:`~orchestrator.agent.ApprovalWatch` asks ``approvers`` first.
    """
    loaded = _loaded(config)
    settings = loaded.config.server

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.startup_error = None
        try:
            tokens = TokenStore(loaded.config.tokens_db)
        except Exception as exc:
            app.state.startup_error = exc
            raise
        started = False
        try:
            check_bind(settings.host, tokens)
            # Reports a run's calls waiting for approval as its events.
            watch = ApprovalWatch(approvers)
            async with (
                Platform.open(loaded, backend=backend, approvers=[watch], warm=True) as platform,
                contextlib.AsyncExitStack() as stack,
            ):
                runner = None
                if loaded.config.model.base_url is not None:
                    runner = await stack.enter_async_context(
                        Agent.open(
                            platform,
                            agent or AgentConfig(lease_s=settings.run_lease_s),
                            approvals=watch,
                            suspend_on_close=settings.resume_runs,
                        )
                    )
                calls = CallsInFlight(platform.gateway)
                app.state.stockade = ServerState(
                    platform=platform,
                    settings=settings,
                    tokens=tokens,
                    run_owners=RunOwners(loaded.config.tokens_db),
                    calls=calls,
                    runs=Runs(runner, loaded.config.state_dir),
                    readiness=_health.ReadinessProbe(platform),
                    local=_local_identity(settings),
                )
                if settings.resume_runs:  # runs a stopped server left unfinished
                    # Entered after the agent: its lease timers stop before the agent closes.
                    await stack.enter_async_context(app.state.stockade.runs.resuming())
                # MCP at server.mcp_path; its sessions end before the platform closes.
                await stack.enter_async_context(serve_mcp(app, watch))
                # With metrics.serve, also a port of their own, as every long-running command.
                endpoint = await stack.enter_async_context(
                    serving_metrics(platform.metrics, loaded.config, None, command="serve")
                )
                if endpoint is not None:
                    _log.info("metrics at %s", endpoint.url)
                started = True
                try:
                    yield
                finally:
                    # Before the platform goes: each cancelled call is recorded.
                    await calls.aclose()
        except Exception as exc:
            if not started:
                # For the command line, which says what failed in one line.
                app.state.startup_error = exc
            raise
        finally:
            tokens.close()

    app = FastAPI(
        title="Stockade",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # the interactive pages load scripts from a CDN
        redoc_url=None,
        # Operation ids are the route functions' names: list_tools, call_tool, approve…
        generate_unique_id_function=lambda route: route.name,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_problem_handlers(app)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(CancelledAsUnavailable)  # added last: the outermost
    app.include_router(_health.router)
    for router in (*API_ROUTERS, *routers):
        app.include_router(router)
    app.include_router(page_router())  # the approval page, under /ui

    # Prometheus scrapes without a token: the exposition holds counts under
    # bounded labels only (no run ids, principals or arguments).
    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        accept = request.headers.get("accept")
        body, content_type = await asyncio.to_thread(
            render, app.state.stockade.platform.metrics, accept
        )
        return Response(body, media_type=content_type)

    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error body a problem under ``application/problem+json``.

    FastAPI describes its validation errors in its own shape; the server
    answers them as problems (see ``_problems``), and so does the document.
    """
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    if status[0] not in "45":
                        continue
                    content = response.setdefault("content", {})
                    schema = content.pop("application/json", {}).get("schema", problem_ref)
                    if schema.get("$ref", "").endswith("/HTTPValidationError"):
                        schema = problem_ref
                    content[PROBLEM_MEDIA_TYPE] = {"schema": schema}
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
    return app.openapi_schema


def render_openapi() -> str:
    """The API's OpenAPI document as checked in (``docs/openapi.json``)."""
    document = create_app(StockadeConfig()).openapi()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def uvicorn_config(
    app: FastAPI,
    *,
    host: str,
    port: int,
    shutdown_grace_s: int,
    access_log: bool = True,
    configure_logging: bool = True,
) -> uvicorn.Config:
    """How the server runs under uvicorn: one process (one platform), one event loop.

    ``configure_logging=False`` leaves logging as the embedding program set it
    (tests, benchmarks); ``port=0`` picks a free port.
    """
    extra: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",  # a platform that cannot open stops the server
        loop="asyncio",
        http="h11",
        ws="none",
        # Calls waiting for approval hold requests open: bound how long a
        # shutdown waits for them (their approval requests stay pending).
        timeout_graceful_shutdown=shutdown_grace_s,
        # The principal comes from the token; nothing a proxy adds is trusted.
        proxy_headers=False,
        server_header=False,
        access_log=access_log,
        **extra,
    )

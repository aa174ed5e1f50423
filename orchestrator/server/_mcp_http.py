"""The MCP endpoint of ``stockade serve``: the streamable HTTP transport, behind the API's guards.

Mounted at ``server.mcp_path`` (``/mcp``) of the API's application and run
by the SDK's :class:`~mcp.server.streamable_http_manager.StreamableHTTPSessionManager`
inside the server's lifespan. Before the SDK sees a request, this endpoint:

- authenticates it exactly as the API does (``Authorization: Bearer``, the
  same tokens; none → 401, a token without the ``caller`` role → 403, as
  problems), every request, so a revoked token is refused from its next request
  on (one already under way runs to its end);
- on a loopback server, refuses requests naming another host or coming from
  another origin (DNS rebinding: the MCP specification asks servers to check
  ``Origin``), tokens or not;
- hands the SDK the token as the request's user, so a session answers only
  the token that opened it (the SDK's own check; another token gets 404);
- gives each token a session manager of its own, so the cap on open sessions
  (:data:`MAX_SESSIONS_PER_TOKEN`) is one token's: a token at its cap gets 503
  for its next session, and no other token notices.

Request bodies are bounded by the API's middleware (size, JSON depth) before
any of this. Each session's calls act for its token's principal in one run
of its own (``mcp-`` and a hash of the session id), claimed in the server's
run-owner map, so no other principal reaches its workspace. A 2026-07-28
client has no session: its requests share one run per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from orchestrator.agent import ApprovalWatch
from orchestrator.approvals import load_approvers
from orchestrator.server._auth import authenticate
from orchestrator.server._bind import is_loopback_host, is_loopback_origin
from orchestrator.server._mcp import McpCaller, McpRefused, mcp_server
from orchestrator.server._mcp_rounds import McpRounds
from orchestrator.server._mcp_waits import McpWaits, approval_page_url
from orchestrator.server._problems import ProblemCode, ProblemError, problem_response
from orchestrator.server._roles import Identity, Permission
from orchestrator.server._runs_api import claim_run
from orchestrator.server._state import ServerState

__all__ = [
    "MAX_SESSIONS_PER_TOKEN",
    "McpEndpoint",
    "serve_mcp",
    "session_run_id",
    "token_run_id",
]

_log = logging.getLogger(__name__)

_IDENTITY = "stockade.identity"  # the scope key this endpoint leaves for the call handler
_STATE = "stockade.state"

# A session nobody used for this long is closed (its run's workspace stays).
_SESSION_IDLE_S = 30 * 60

MAX_SESSIONS_PER_TOKEN = 32
"""MCP sessions one token may hold open at once; its next is refused (503) until one ends
(the client's DELETE, or idle for half an hour). One session manager for all had one cap
for everyone (the SDK's 10 000): a single caller token opened them all (~80 s, ~40 KiB
each) and every other client was refused for as long as it kept them."""


def session_run_id(session_id: str) -> str:
    """The run of one MCP session (the session id itself stays out of logs and run lists)."""
    return "mcp-" + hashlib.sha256(f"session:{session_id}".encode()).hexdigest()[:24]


def token_run_id(identity: Identity) -> str:
    """The run of a token's sessionless (2026-07-28) requests."""
    holder = identity.token_id or f"local:{identity.principal}"
    return "mcp-" + hashlib.sha256(f"token:{holder}".encode()).hexdigest()[:24]


async def _identify(ctx: ServerRequestContext[Any]) -> McpCaller:
    """Who a request acts for: its token's principal, in its session's run (or its token's)."""
    request = ctx.request
    if not isinstance(request, Request) or _IDENTITY not in request.scope:
        raise McpRefused("the request did not come through the server's MCP endpoint")
    identity: Identity = request.scope[_IDENTITY]
    state: ServerState = request.scope[_STATE]
    session_id = request.headers.get(MCP_SESSION_ID_HEADER)
    # A 2026-07-28 request belongs to no session: the token's calls share one run.
    run_id = session_run_id(session_id) if session_id else token_run_id(identity)
    if not await claim_run(state, run_id, identity):
        raise McpRefused(f"run {run_id} belongs to another principal")
    return McpCaller(principal=identity.principal, run_id=run_id)


class McpEndpoint:
    """The ASGI application at the MCP path; serves once :meth:`run` has started it."""

    def __init__(self) -> None:
        self._server: Server[Any] | None = None
        self._max_body_bytes = 0
        # One session manager per token (its public id; "local" without one), each in a
        # task of its own that the endpoint's run stops.
        self._managers: dict[str, StreamableHTTPSessionManager] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def run(self, state: ServerState, watch: ApprovalWatch) -> AsyncIterator[None]:
        """Serve sessions until the context ends (then every session and its calls end).

        The endpoint's approver (progress, elicitation) joins ``watch``, the
        approver the server's platform asks.
        """
        platform = state.platform
        settings = state.settings
        path = platform.config.approvals.approvers
        # Already checked when the platform opened; read again for its elicitation section.
        approvers = await asyncio.to_thread(load_approvers, path) if path is not None else None
        elicitation = approvers.elicitation if approvers is not None else None
        waits = McpWaits(
            elicitation=elicitation,
            self_approval=settings.self_approval,
            page_url=approval_page_url(settings.host, settings.port),
            redact_patterns=platform.gateway.policy.redact,
        )
        watch.add(waits)
        rounds = McpRounds(platform.gateway, waits)
        self._max_body_bytes = settings.max_body_bytes
        self._stop = asyncio.Event()
        self._server = mcp_server(platform, _identify, waits=waits, rounds=rounds)
        try:
            yield
        finally:
            self._server = None
            await rounds.aclose()
            async with self._starting:  # no manager starts from now on
                self._stop.set()  # each manager ends its sessions
                await asyncio.gather(*self._running, return_exceptions=True)
                self._managers.clear()

    async def _manager(self, identity: Identity) -> StreamableHTTPSessionManager | None:
        """The session manager of ``identity``'s token, started on its first request."""
        key = identity.token_id or "local"
        async with self._starting:
            manager = self._managers.get(key)
            if manager is not None or self._server is None:
                return manager
            manager = StreamableHTTPSessionManager(
                self._server,
                max_request_body_size=self._max_body_bytes,
                session_idle_timeout=_SESSION_IDLE_S,
                max_sessions=MAX_SESSIONS_PER_TOKEN,
            )
            started = asyncio.Event()
            task = asyncio.create_task(self._serve(manager, started), name=f"mcp-sessions:{key}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            # Also set when the task ends: a manager that failed to start serves nobody.
            task.add_done_callback(lambda _: started.set())
            await started.wait()
            if task.done():
                return None
            self._managers[key] = manager
            return manager

    async def _serve(self, manager: StreamableHTTPSessionManager, started: asyncio.Event) -> None:
        """Run ``manager`` (its sessions' tasks) until the endpoint stops."""
        try:
            async with manager.run():
                started.set()
                await self._stop.wait()
        except Exception:
            _log.exception("an MCP session manager failed; its token's sessions ended")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._server is None or scope["type"] != "http":
            await _unavailable(scope, receive, send)
            return
        request = Request(scope, receive)
        state: ServerState = request.app.state.stockade
        try:
            identity = self._authenticate(request, state)
        except ProblemError as refused:
            await problem_response(
                refused.status, refused.code, refused.detail, headers=refused.headers
            )(scope, receive, send)
            return
        manager = await self._manager(identity)
        if manager is None:  # the endpoint stopped meanwhile
            await _unavailable(scope, receive, send)
            return
        scope[_IDENTITY] = identity
        scope[_STATE] = state
        # The SDK binds each session to the token that opened it.
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token="-",  # noqa: S106 - no secret: the SDK compares client id and subject only
                client_id=identity.token_id or "local",
                subject=identity.principal,
                scopes=sorted(identity.roles),
            )
        )
        await manager.handle_request(scope, receive, send)

    @staticmethod
    def _authenticate(request: Request, state: ServerState) -> Identity:
        """The request's identity, as the API finds it; refused (problems) without the right."""
        if is_loopback_host(state.settings.host) and not is_loopback_origin(
            request.headers.get("host"), request.headers.get("origin")
        ):
            raise ProblemError(
                403,
                ProblemCode.HOST_NOT_ALLOWED,
                "this server listens on loopback: requests must name a loopback host and "
                "come from a loopback origin",
            )
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        credentials = (
            HTTPAuthorizationCredentials(scheme=scheme, credentials=token)
            if scheme.lower() == "bearer" and token
            else None
        )
        identity = authenticate(request, credentials)
        if not identity.can(Permission.CALL_TOOLS):
            roles = ", ".join(sorted(identity.roles)) or "none"
            raise ProblemError(
                403,
                ProblemCode.FORBIDDEN,
                f"{identity.principal}'s token (roles: {roles}) may not call tools over MCP; "
                "that needs the role caller or admin",
            )
        return identity


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    await problem_response(503, ProblemCode.UNAVAILABLE, "the MCP endpoint is not running")(
        scope, receive, send
    )


@contextlib.asynccontextmanager
async def serve_mcp(app: FastAPI, watch: ApprovalWatch) -> AsyncIterator[McpEndpoint | None]:
    """Serve MCP at ``server.mcp_path`` of the running ``app`` until the context ends.

    For the application's lifespan, once the server's state is made: the
    route exists while the endpoint runs (none when ``server.mcp_path`` is null).
    """
    state: ServerState = app.state.stockade
    path = state.settings.mcp_path
    if path is None:
        yield None
        return
    endpoint = McpEndpoint()
    route = Route(path, endpoint, include_in_schema=False)  # every method: POST, GET, DELETE
    async with endpoint.run(state, watch):
        app.router.routes.append(route)
        try:
            yield endpoint
        finally:
            app.router.routes.remove(route)

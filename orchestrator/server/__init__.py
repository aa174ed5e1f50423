"""The HTTP API: ``stockade serve``, one platform behind every request, and who may do what.

:func:`create_app` builds the application; its lifespan opens the one
:class:`~orchestrator.platform.Platform`. Requests authenticate with bearer
tokens from the :class:`TokenStore` (``stockade tokens``); the token's
principal is the one the gateway sees, its :class:`Role` set what the
request may do. Agent runs (``/v1/runs``) run on an agent the server opens
when a model is configured (:class:`Runs`). Routers added later (metrics, the approval page)
protect themselves with :func:`require` and reach the platform through
:data:`State`, answering errors with :class:`ProblemError`.
"""

from orchestrator.runowners import RunOwners
from orchestrator.server._app import (
    API_ROUTERS,
    API_VERSION,
    create_app,
    render_openapi,
    uvicorn_config,
)
from orchestrator.server._auth import authenticate, require
from orchestrator.server._bind import check_bind, is_loopback_host
from orchestrator.server._calls import CallsInFlight
from orchestrator.server._limits import RequestLimits, json_depth
from orchestrator.server._problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemCode,
    ProblemError,
    problem_responses,
)
from orchestrator.server._roles import ROLE_PERMISSIONS, Identity, Permission, Role
from orchestrator.server._runs import Runs
from orchestrator.server._state import ServerState, State, server_state
from orchestrator.server._tokens import IssuedToken, TokenInfo, TokenStore

__all__ = [
    "API_ROUTERS",
    "API_VERSION",
    "PROBLEM_MEDIA_TYPE",
    "ROLE_PERMISSIONS",
    "CallsInFlight",
    "Identity",
    "IssuedToken",
    "Permission",
    "Problem",
    "ProblemCode",
    "ProblemError",
    "RequestLimits",
    "Role",
    "RunOwners",
    "Runs",
    "ServerState",
    "State",
    "TokenInfo",
    "TokenStore",
    "authenticate",
    "check_bind",
    "create_app",
    "is_loopback_host",
    "json_depth",
    "problem_responses",
    "render_openapi",
    "require",
    "server_state",
    "uvicorn_config",
]

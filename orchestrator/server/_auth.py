"""Authentication and authorisation of a request: a bearer token, its principal, its roles.

The principal a request acts for comes from its token and nothing else: not
from the body, not from any header but ``Authorization``. Routes ask for a
:class:`~orchestrator.server.Permission` with :func:`require`, never look at
roles or tokens themselves.

While no token was ever issued, a server on loopback (and
``server.unauthenticated_loopback``) serves requests without a token as
the user running it, provided they name a loopback host and, when sent by
a browser, come from this server's own origin (loopback, its port): that
stops a web page from using the server through DNS rebinding, a cross-site
form, or a page another local server serves on another port. The first token
issued ends this for good, even after it is revoked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.server._bind import is_own_loopback_origin
from orchestrator.server._problems import ProblemCode, ProblemError
from orchestrator.server._roles import ROLE_PERMISSIONS, Identity, Permission
from orchestrator.server._state import ServerState

__all__ = ["authenticate", "require", "still_valid"]

# Registers the scheme in the OpenAPI document; errors are ours (problems).
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `stockade tokens create` (Authorization: Bearer stk_…).",
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stockade"'}


def _unauthenticated(detail: str, challenge: dict[str, str] | None = None) -> ProblemError:
    return ProblemError(401, ProblemCode.UNAUTHENTICATED, detail, headers=challenge or _CHALLENGE)


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Identity:
    """The identity the request's token gives it; raises the 401 (or 403) problem without one."""
    state: ServerState = request.app.state.stockade
    if credentials is None:
        if request.headers.get("authorization"):
            raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
        local = state.local
        if local is not None and not state.tokens.ever_issued():
            host, origin = request.headers.get("host"), request.headers.get("origin")
            if not is_own_loopback_origin(host, origin):
                raise ProblemError(
                    403,
                    ProblemCode.HOST_NOT_ALLOWED,
                    "requests without a token must name a loopback host and, from a browser, "
                    "come from this server's own origin",
                )
            return local
        raise _unauthenticated("this endpoint needs an API token (Authorization: Bearer <token>)")
    token = state.tokens.authenticate(credentials.credentials)
    if token is None:
        raise _unauthenticated(
            "the token is unknown or revoked",
            {"WWW-Authenticate": 'Bearer realm="stockade", error="invalid_token"'},
        )
    return Identity(principal=token.principal, roles=token.roles, token_id=token.id)


def still_valid(state: ServerState, identity: Identity) -> bool:
    """Whether ``identity``, authenticated earlier, would still be let in now.

    For answers that outlive their request's check (an event stream): its token
    has not been revoked since, or, served without a token, none was issued since.
    """
    if identity.token_id is None:
        return state.local is not None and not state.tokens.ever_issued()
    return state.tokens.is_active(identity.token_id)


def require(permission: Permission) -> Callable[..., object]:
    """A FastAPI dependency: the request's identity, refused (403) unless it has ``permission``.

    Use as ``identity: Annotated[Identity, Depends(require(Permission.CALL_TOOLS))]``.
    """
    allowed = sorted(
        role.value for role, granted in ROLE_PERMISSIONS.items() if permission in granted
    )

    # One dependency with one sub-dependency (the bearer scheme, which also
    # documents itself in the OpenAPI document): each level of FastAPI's
    # dependency solving costs ~15 µs a request.
    async def permitted(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> Identity:
        identity = authenticate(request, credentials)
        if not identity.can(permission):
            roles = ", ".join(sorted(identity.roles)) or "none"
            raise ProblemError(
                403,
                ProblemCode.FORBIDDEN,
                f"{identity.principal}'s token (roles: {roles}) may not {permission.value}; "
                f"that needs one of the roles {', '.join(allowed)}",
            )
        return identity

    return permitted

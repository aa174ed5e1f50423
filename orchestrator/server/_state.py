"""What the server holds for its lifetime, and how a route gets at it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from orchestrator.config import ServerSettings
from orchestrator.platform import Platform
from orchestrator.runowners import RunOwners
from orchestrator.server._calls import CallsInFlight
from orchestrator.server._roles import Identity
from orchestrator.server._runs import Runs
from orchestrator.server._tokens import TokenStore

if TYPE_CHECKING:  # its module's routes take this state
    from orchestrator.server._health import ReadinessProbe

__all__ = ["ServerState", "State", "server_state"]


@dataclass(frozen=True, kw_only=True)
class ServerState:
    """Everything a route needs, made once when the server starts."""

    platform: Platform
    """The one assembled platform: gateway, registry, approvals, configuration."""
    settings: ServerSettings
    """The server's settings."""
    tokens: TokenStore
    """The API tokens."""
    run_owners: RunOwners
    """Which principal owns each run id."""
    calls: CallsInFlight
    """Tool calls running for clients."""
    runs: Runs
    """Agent runs, started through the API or read back from their files."""
    readiness: ReadinessProbe
    """The readiness checks ``/readyz`` answers with."""
    local: Identity | None
    """Who a request without a token acts for while no token was ever issued (a server on
    loopback with ``unauthenticated_loopback``); None: such requests are refused."""


async def server_state(request: Request) -> ServerState:
    """The running server's state (a FastAPI dependency).

    ``async`` although it never waits: FastAPI runs a plain function
    dependency in a worker thread, which cost two thread hand-offs per request.
    """
    state: ServerState = request.app.state.stockade
    return state


State = Annotated[ServerState, Depends(server_state)]
"""A route parameter of this type receives the server's state."""

"""How the elicitation approver reaches the user of the MCP client that made a call.

Two protocol eras, two channels, one :class:`~orchestrator.approvals.ElicitationChannel`:

- handshake sessions (2025-06-18, 2025-11-25): the server sends
  ``elicitation/create`` on the waiting call's own request and awaits the
  answer (:class:`SessionChannel`);
- 2026-07-28 single-exchange requests have no way back to the client: the
  question goes out as the call's ``input_required`` result, and the answer
  comes in with the client's retry (:class:`RoundsChannel`; the rounds
  themselves are :mod:`orchestrator.server._mcp_rounds`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext

from orchestrator.approvals import ApprovalRequest, ElicitationMode
from orchestrator.tools import ToolCall

__all__ = ["RoundsChannel", "SessionChannel", "WaitingCall", "client_takes"]


@dataclass(kw_only=True)
class WaitingCall:
    """One call an MCP client is waiting on."""

    call: ToolCall
    """The call, as the gateway got it."""
    ctx: ServerRequestContext[Any]
    """The request waiting for it (over 2026-07-28: the latest round's)."""
    rounds: bool = False
    """Whether the client speaks 2026-07-28 (questions go out as ``input_required``)."""
    request: ApprovalRequest | None = None
    """The approval request it waits on, once raised."""
    ticker: asyncio.Task[None] | None = None
    """The task sending it progress notifications."""
    url_elicitations: list[str] = field(default_factory=list)
    """URL elicitations sent for it (to be declared complete when it ends)."""
    questions: asyncio.Queue[tuple[str, types.ElicitRequest]] = field(default_factory=asyncio.Queue)
    """Questions for the client's next round (2026-07-28), by input key."""
    answers: dict[str, asyncio.Future[types.ElicitResult]] = field(default_factory=dict)
    """The answers awaited, by input key (2026-07-28)."""


def client_takes(ctx: ServerRequestContext[Any], mode: ElicitationMode) -> bool:
    """Whether the client declared elicitation in ``mode`` (a bare ``elicitation: {}``,
    as 2025-06-18 clients declare it, means form only)."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None:
        return False
    if mode == "url":
        return elicitation.url is not None
    return elicitation.form is not None or elicitation.url is None


class SessionChannel:
    """Asks through the session's back channel (``elicitation/create`` on the call's request)."""

    def __init__(self, waiting: WaitingCall) -> None:
        self._waiting = waiting

    @property
    def principal(self) -> str:
        """The call's principal."""
        return self._waiting.call.principal or ""

    def supports(self, mode: ElicitationMode) -> bool:
        """Whether the client takes ``mode`` and the request can carry a question now."""
        ctx = self._waiting.ctx
        return ctx.session.can_send_request and client_takes(ctx, mode)

    async def ask_form(
        self, message: str, schema: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """The user's action and the form's content."""
        ctx = self._waiting.ctx
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return result.action, None if result.content is None else dict(result.content)

    async def ask_url(self, message: str, url: str, elicitation_id: str) -> str:
        """The user's action on being sent to ``url``."""
        ctx = self._waiting.ctx
        self._waiting.url_elicitations.append(elicitation_id)
        result = await ctx.session.elicit_url(
            message, url, elicitation_id, related_request_id=ctx.request_id
        )
        return result.action


class RoundsChannel:
    """Asks in the client's next round (2026-07-28): the question waits for a round to carry it."""

    def __init__(self, waiting: WaitingCall) -> None:
        self._waiting = waiting

    @property
    def principal(self) -> str:
        """The call's principal."""
        return self._waiting.call.principal or ""

    def supports(self, mode: ElicitationMode) -> bool:
        """Whether the client declared ``mode`` in its request's envelope."""
        return client_takes(self._waiting.ctx, mode)

    async def _ask(self, key: str, params: types.ElicitRequestParams) -> types.ElicitResult:
        answer: asyncio.Future[types.ElicitResult] = asyncio.get_running_loop().create_future()
        self._waiting.answers[key] = answer
        self._waiting.questions.put_nowait((key, types.ElicitRequest(params=params)))
        try:
            return await answer
        finally:
            self._waiting.answers.pop(key, None)

    async def ask_form(
        self, message: str, schema: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """The user's action and the form's content, from the client's next round."""
        result = await self._ask(
            f"approval-{len(self._waiting.answers)}",
            types.ElicitRequestFormParams(message=message, requested_schema=schema),
        )
        return result.action, None if result.content is None else dict(result.content)

    async def ask_url(self, message: str, url: str, elicitation_id: str) -> str:
        """The user's action on being sent to ``url``, from the client's next round."""
        result = await self._ask(
            f"approval-page-{elicitation_id}",
            types.ElicitRequestURLParams(message=message, url=url, elicitation_id=elicitation_id),
        )
        return result.action

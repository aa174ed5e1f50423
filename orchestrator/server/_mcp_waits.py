"""MCP calls waiting for approval: progress to the client, and (if on) the client's user asked.

:class:`McpWaits` is an approver for the gateway's chain (the server adds it
to its :class:`~orchestrator.agent.ApprovalWatch`; ``stockade mcp`` passes it
to ``Platform.open``). It decides nothing itself: when a request is raised by
a call an MCP client is waiting on, it starts sending that client progress
notifications ("waiting for approval <id> (rule …)") on the call's own
request, if the client sent a progress token, until the call returns; then it
hands the request to the :class:`~orchestrator.approvals.ElicitationApprover`
when the approvers file turned it on, whose answer becomes the decision.
The gateway keeps watching the durable store meanwhile: a decision taken
anywhere else ends the wait and withdraws the question.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mcp.server.context import ServerRequestContext

from orchestrator.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    ElicitationApprover,
    ElicitationConfig,
)
from orchestrator.server._mcp_channels import RoundsChannel, SessionChannel, WaitingCall
from orchestrator.tools import ToolCall

__all__ = ["APPROVAL_PAGE_PATH", "PROGRESS_EVERY_S", "McpWaits", "approval_page_url"]

_log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
"""How often a waiting call tells its client it still waits (clients time requests out
unless they see progress; five seconds is well inside the usual read timeouts)."""


class McpWaits:
    """The MCP calls under way, and the approver that reports (and maybe asks) their approvals."""

    def __init__(
        self,
        *,
        elicitation: ElicitationConfig | None = None,
        self_approval: bool = True,
        page_url: str = "http://127.0.0.1:8787/ui/approvals",
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        """Report waits every ``progress_every_s``; ask users when ``elicitation`` is given.

        ``self_approval`` and ``page_url`` (the approval page as users reach
        it) are for the elicitation approver.
        """
        self._calls: dict[tuple[str | None, str], WaitingCall] = {}
        self._every = progress_every_s
        self._elicit = (
            None
            if elicitation is None
            else ElicitationApprover(
                elicitation,
                channel_for=self._channel,
                self_approval=self_approval,
                page_url=page_url,
                redact_patterns=redact_patterns,
            )
        )

    @property
    def elicitation(self) -> ElicitationApprover | None:
        """The elicitation approver, when on."""
        return self._elicit

    def __len__(self) -> int:
        return len(self._calls)

    @contextlib.asynccontextmanager
    async def calling(self, call: ToolCall, ctx: ServerRequestContext[Any]) -> AsyncIterator[None]:
        """While ``call`` runs for the client of ``ctx``: report its approval, if one is asked."""
        waiting = self.register(call, ctx)
        try:
            yield
        finally:
            self.unregister(waiting)
            for elicitation_id in waiting.url_elicitations:
                # The page's decision is in: the client may close what it opened.
                with contextlib.suppress(Exception):
                    await ctx.session.send_elicit_complete(
                        elicitation_id, related_request_id=ctx.request_id
                    )

    def register(
        self, call: ToolCall, ctx: ServerRequestContext[Any], *, rounds: bool = False
    ) -> WaitingCall:
        """Watch ``call``'s approval until :meth:`unregister` (``rounds``: a 2026-07-28 client)."""
        waiting = WaitingCall(call=call, ctx=ctx, rounds=rounds)
        self._calls[(call.run_id, call.id)] = waiting
        return waiting

    def unregister(self, waiting: WaitingCall) -> None:
        """Stop watching a call (it has ended): no more progress for it."""
        self._calls.pop((waiting.call.run_id, waiting.call.id), None)
        if waiting.ticker is not None:
            waiting.ticker.cancel()
        for answer in waiting.answers.values():
            answer.cancel()

    def _channel(self, request: ApprovalRequest) -> SessionChannel | RoundsChannel | None:
        waiting = self._calls.get((request.run_id, request.call_id or ""))
        if waiting is None:
            return None
        return RoundsChannel(waiting) if waiting.rounds else SessionChannel(waiting)

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """Start reporting a waiting call's request; the user's decision if elicitation is on."""
        waiting = self._calls.get((request.run_id, request.call_id or ""))
        if waiting is None:
            return None  # not a call of an MCP client of this process
        waiting.request = request
        meta = waiting.ctx.meta
        if waiting.ticker is None and meta is not None and meta.get("progress_token") is not None:
            waiting.ticker = asyncio.create_task(
                self._report(waiting), name=f"mcp-progress:{request.id}"
            )
        if self._elicit is None:
            return None
        return await self._elicit(request)

    async def _report(self, waiting: WaitingCall) -> None:
        """Progress notifications on the call's request, until the call returns."""
        beat = 0
        while True:
            request = waiting.request
            assert request is not None
            beat += 1
            message = f"waiting for approval {request.id} (rule {request.rule or '-'}): "
            message += request.reason
            try:
                # On the call's request (over 2026-07-28: the latest round's).
                await waiting.ctx.session.report_progress(float(beat), None, message)
            except Exception:
                # The client went away; the call ends with its request (or its rounds).
                _log.debug("progress for request %s not delivered", request.id, exc_info=True)
            await asyncio.sleep(self._every)


APPROVAL_PAGE_PATH = "/ui/approvals"
"""Where the server serves its approval page."""


def approval_page_url(host: str, port: int) -> str:
    """The approval page at the server's own address (``http://host:port/ui/approvals``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{APPROVAL_PAGE_PATH}"

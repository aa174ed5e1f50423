"""Tool calls of 2026-07-28 MCP clients: one call across the rounds of ``input_required``.

A 2026-07-28 request is one exchange with no way back to the client, so a
question (the elicitation approver's) cannot be sent while the call waits.
Instead the call runs detached from the request that started it, and that
request ends with whichever comes first: the call's result, or an
``input_required`` result carrying the question and a ``requestState``
naming the call. The client answers in a retry of the same call (same tool,
same arguments, the state echoed), which hands the answer to the waiting
approver and waits again. The state is random, sealed by the SDK's
:class:`~mcp.server.request_state.RequestStateBoundary` (expiry, tool and
arguments bound), and a retry by another principal finds nothing.

The call's live output goes out as progress notifications on the latest
round's request, as the approval wait's progress does (``_mcp_live``).

A client that never retries leaves the call waiting for a decision taken
elsewhere (or the policy's approval timeout); its result is audited as usual.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext

from orchestrator.gateway import Gateway
from orchestrator.server._mcp_channels import WaitingCall
from orchestrator.server._mcp_live import output_progress
from orchestrator.server._mcp_waits import McpWaits
from orchestrator.tools import ToolCall, ToolResult

__all__ = ["McpRounds"]

# How long a finished call's result waits for a retry that has not come yet.
_KEEP_S = 600.0


@dataclass(kw_only=True)
class _Pending:
    """One detached call and what its rounds asked."""

    state: str
    waiting: WaitingCall
    task: asyncio.Task[ToolResult]
    asked: dict[str, types.ElicitRequest] = field(default_factory=dict)


class McpRounds:
    """The detached calls of 2026-07-28 clients, by the ``requestState`` that names them."""

    def __init__(self, gateway: Gateway, waits: McpWaits) -> None:
        self._gateway = gateway
        self._waits = waits
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    async def start(
        self, call: ToolCall, ctx: ServerRequestContext[Any]
    ) -> ToolResult | types.InputRequiredResult:
        """The first round: the call's result, or the question it waits on."""
        waiting = self._waits.register(call, ctx, rounds=True)
        state = secrets.token_urlsafe(24)
        task = asyncio.create_task(self._run(waiting), name=f"mcp-call:{call.id}")
        pending = _Pending(state=state, waiting=waiting, task=task)
        self._pending[state] = pending

        def ended(_task: asyncio.Task[ToolResult]) -> None:
            self._waits.unregister(waiting)
            # The retry that would collect it may still come; not forever.
            asyncio.get_running_loop().call_later(_KEEP_S, self._pending.pop, state, None)

        task.add_done_callback(ended)
        return await self._round(pending)

    async def _run(self, waiting: WaitingCall) -> ToolResult:
        """The call, its live output as progress on the latest round's request."""
        async with output_progress(waiting.ctx, latest=lambda: waiting.ctx) as on_output:
            return await self._gateway.call(waiting.call, on_output=on_output)

    async def resume(
        self,
        state: str,
        params: types.CallToolRequestParams,
        ctx: ServerRequestContext[Any],
        principal: str,
    ) -> ToolResult | types.InputRequiredResult | str:
        """A retry: the answers handed to the waiting approver, then the next round.

        A string is why the retry is refused (an unknown state, another
        principal's, another tool or other arguments).
        """
        pending = self._pending.get(state)
        if pending is None or pending.waiting.call.principal != principal:
            return "the requestState names no call of yours (it expired, or it was collected)"
        call = pending.waiting.call
        if params.name != call.name or dict(params.arguments or {}) != call.arguments:
            return "a retry must name the same tool with the same arguments"
        pending.waiting.ctx = ctx  # progress now goes to this round's request
        for key, response in (params.input_responses or {}).items():
            answer = pending.waiting.answers.get(key)
            if answer is None or answer.done():
                continue
            if isinstance(response, types.ElicitResult):
                answer.set_result(response)
            else:  # not an answer to a form: as if dismissed
                answer.set_result(types.ElicitResult(action="cancel"))
            pending.asked.pop(key, None)
        return await self._round(pending)

    async def _round(self, pending: _Pending) -> ToolResult | types.InputRequiredResult:
        """Wait for the result or a question; questions still unanswered go out again."""
        unanswered = {
            key: question
            for key, question in pending.asked.items()
            if key in pending.waiting.answers and not pending.task.done()
        }
        if unanswered:
            return types.InputRequiredResult(
                input_requests=dict(unanswered), request_state=pending.state
            )
        question = asyncio.ensure_future(pending.waiting.questions.get())
        try:
            await asyncio.wait({pending.task, question}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            question.cancel()
        if pending.task.done():
            self._pending.pop(pending.state, None)
            return pending.task.result()
        key, request = question.result()
        pending.asked[key] = request
        return types.InputRequiredResult(input_requests={key: request}, request_state=pending.state)

    async def aclose(self) -> None:
        """Cancel the calls still running (the server is stopping)."""
        tasks = [pending.task for pending in self._pending.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()

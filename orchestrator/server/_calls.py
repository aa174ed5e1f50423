"""Tool calls the server is running for clients, by run and call id.

A call that needs approval can keep its HTTP request open for minutes, and
clients, proxies and load balancers give up on requests that long and try
again. A retry of a call still running (same run and call id, same tool and
arguments) joins it and gets its result, instead of running a second
gateway call that would race the first for the same approval. A different
call reusing the ids while the first runs is refused.

Calls run detached from the request that started them: a client that goes
away cancels nothing (the approval stays answerable, the result is
audited); the server's shutdown cancels what is still running.
"""

from __future__ import annotations

import asyncio

from orchestrator.gateway import Gateway
from orchestrator.server._problems import ProblemCode, ProblemError
from orchestrator.tools import ToolCall, ToolResult

__all__ = ["CallsInFlight"]


class CallsInFlight:
    """Runs calls through the gateway, one gateway call per (run id, call id) at a time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._running: dict[tuple[str | None, str], tuple[ToolCall, asyncio.Task[ToolResult]]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def call(self, call: ToolCall) -> ToolResult:
        """The result of ``call``, run now or joined if it is already running.

        Raises :class:`ProblemError` (409, ``call_id_in_use``) when another
        call with the same run and call id is running.
        """
        key = (call.run_id, call.id)
        running = self._running.get(key)
        if running is None:
            task = asyncio.create_task(self._gateway.call(call), name=f"call:{call.id}")
            self._running[key] = (call, task)
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            first, task = running
            if (first.name, first.arguments, first.principal) != (
                call.name,
                call.arguments,
                call.principal,
            ):
                raise ProblemError(
                    409,
                    ProblemCode.CALL_ID_IN_USE,
                    f"call {call.id} of run {call.run_id} is still running with another tool "
                    "or other arguments; use a new call id",
                )
        # The request may go away; the call goes on (shield), and its result is audited.
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str | None, str], done: asyncio.Task[ToolResult]) -> None:
        entry = self._running.get(key)
        if entry is not None and entry[1] is done:
            del self._running[key]

    async def aclose(self) -> None:
        """Cancel the calls still running and wait for them (the gateway records each)."""
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

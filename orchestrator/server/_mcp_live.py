"""A running MCP call's live output, sent to the client as progress notifications.

When the client's request carries a progress token, each chunk of the tool's
output becomes one ``notifications/progress`` on that request, its message
the text with control sequences stripped and its progress the bytes of
output so far. The listener only queues (bounded: a client that reads
slowly loses chunks, with a marker, and never slows the call); a task
sends. What is still queued when the call returns is sent before its result.

A 2026-07-28 client's call outlives the request that started it (see
``_mcp_rounds``): its output goes to the latest round's request, whichever
that is when a chunk is sent (the SDK sends nothing for a round whose
request carries no token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from mcp.server.context import ServerRequestContext

from orchestrator.display import for_display
from orchestrator.sandbox.live import ChunkQueue, OutputChunk, OutputListener

__all__ = ["output_progress"]

_log = logging.getLogger(__name__)
_QUEUE = 64
_FLUSH_S = 2.0  # bound on sending what is queued when the call returns


@contextlib.asynccontextmanager
async def output_progress(
    ctx: ServerRequestContext[Any],
    *,
    latest: Callable[[], ServerRequestContext[Any]] | None = None,
) -> AsyncIterator[OutputListener | None]:
    """A listener for ``Gateway.call(on_output=...)``; None when the client gave no token.

    With ``latest`` (a call in rounds), chunks go to the request it names when
    each is sent, and there is a listener whatever ``ctx`` carries: a later
    round may ask for progress.
    """
    meta = ctx.meta
    if latest is None and (meta is None or meta.get("progress_token") is None):
        yield None
        return
    target = latest if latest is not None else lambda: ctx
    queue = ChunkQueue(_QUEUE)
    sent = 0

    async def send(chunk: OutputChunk) -> None:
        nonlocal sent
        text = for_display(chunk.text)
        sent += max(len(chunk.text.encode()), 1)
        try:
            await target().session.report_progress(float(sent), None, text)
        except Exception:
            _log.debug("live output for an MCP call not delivered", exc_info=True)

    async def pump() -> None:
        while (chunk := await queue.get()) is not None:
            await send(chunk)

    task = asyncio.create_task(pump(), name="mcp-live-output")
    try:
        yield queue.put
    finally:
        queue.close()  # the rest is sent, then the pump ends
        try:
            async with asyncio.timeout(_FLUSH_S):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()

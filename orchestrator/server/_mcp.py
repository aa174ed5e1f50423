"""The platform's tools as an MCP server: every call through the gateway, as one principal.

Built on the official ``mcp`` SDK's low-level :class:`~mcp.server.lowlevel.Server`
(a tool list known only at run time). It validates nothing itself: the
gateway checks arguments, policy, rate limits and approvals, and audits.
A result maps to one text content (the output, or the status and error, then a
line per artifact and per workspace entry not kept), then one image content
per raster image artifact within the agent's caps, with the whole
:class:`~orchestrator.tools.ToolResult` as structured content, and
``isError`` for every status but ``ok``. While a call waits for approval,
:class:`~orchestrator.server._mcp_waits.McpWaits` reports it as progress.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from orchestrator.agent._images import pick
from orchestrator.artifacts import Artifact
from orchestrator.platform import Platform
from orchestrator.server._mcp_live import output_progress
from orchestrator.server._mcp_rounds import McpRounds
from orchestrator.server._mcp_waits import McpWaits
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

__all__ = ["Identify", "McpCaller", "McpRefused", "mcp_result", "mcp_server"]


def mcp_result(
    result: ToolResult, images: Sequence[tuple[Artifact, bytes]] = ()
) -> types.CallToolResult:
    """A gateway result as MCP's: text content (then ``images``, the call's raster image
    artifacts with their bytes, as image content), the result as structured content, isError."""
    failed = result.status is not ToolStatus.OK
    text = result.output
    if failed:
        text = f"{result.status.value}: {result.error or 'the call failed'}"
        if result.output:
            text += f"\n{result.output}"
    # What a client's model reads: the artifacts and the entries not kept, too.
    text = "\n".join([*([text] if text else []), *result.notes()])
    shown = [
        types.ImageContent(
            type="image", data=base64.b64encode(data).decode("ascii"), mime_type=artifact.media_type
        )
        for artifact, data in images
    ]
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text), *shown],
        structured_content=result.model_dump(mode="json"),
        is_error=failed,
    )


async def _shown_images(
    platform: Platform, result: ToolResult, run_id: str
) -> list[tuple[Artifact, bytes]]:
    """The call's image artifacts a client's model may be shown, with their bytes (the agent's
    caps: raster types only, never SVG, a few MiB); an image that cannot be read is left out
    (its text line stays)."""
    shown = []
    for _, artifact in pick([(result.call_id, artifact) for artifact in result.artifacts]):
        try:
            data = await asyncio.to_thread(platform.artifacts.read, run_id, artifact)
        except OSError:
            continue
        shown.append((artifact, data))
    return shown


@dataclass(frozen=True, kw_only=True, slots=True)
class McpCaller:
    """Who an MCP request's tool call acts for, and in which run."""

    principal: str
    """The principal policies, rate limits, approvals and the audit log see."""
    run_id: str
    """The session's run: its workspace, rate limits and standing approval grants."""


class McpRefused(Exception):
    """A request the entrance will not serve; its message goes back as an error result."""


Identify = Callable[[ServerRequestContext[Any]], Awaitable[McpCaller]]
"""Finds who a request acts for (raises :class:`McpRefused` when nobody it may serve)."""


def mcp_server(
    platform: Platform,
    caller: McpCaller | Identify,
    *,
    waits: McpWaits | None = None,
    rounds: McpRounds | None = None,
) -> Server[Any]:
    """An MCP server of ``platform``'s tools.

    Every call acts for ``caller``: fixed (stdio), or found per request (the
    HTTP endpoint: the token's principal and the session's run). ``waits``
    is told about each call while it runs, so an approval it waits for is
    reported to the client as progress (and, when configured, asked of the
    client's user); ``rounds`` (made on the same ``waits``) carries the calls
    of 2026-07-28 clients across their ``input_required`` rounds. Without
    them, calls simply wait.
    """
    tools = [
        types.Tool(name=spec.name, description=spec.description, input_schema=spec.schema)
        for spec in platform.registry.tools()
    ]

    async def identify(ctx: ServerRequestContext[Any]) -> McpCaller:
        if isinstance(caller, McpCaller):
            return caller
        return await caller(ctx)

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        try:
            who = await identify(ctx)
        except McpRefused as refused:
            return _refused(str(refused))
        if rounds is not None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await _in_rounds(ctx, params, who)
        call = ToolCall(
            id=f"mcp-{uuid.uuid4().hex}",
            name=params.name,
            arguments=dict(params.arguments or {}),
            run_id=who.run_id,
            principal=who.principal,
        )
        if waits is None:
            async with output_progress(ctx) as on_output:
                result = await platform.gateway.call(call, on_output=on_output)
        else:
            async with waits.calling(call, ctx), output_progress(ctx) as on_output:
                result = await platform.gateway.call(call, on_output=on_output)
        return mcp_result(result, await _shown_images(platform, result, who.run_id))

    async def _in_rounds(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, who: McpCaller
    ) -> types.CallToolResult | types.InputRequiredResult:
        assert rounds is not None
        if params.request_state is not None:
            answer = await rounds.resume(params.request_state, params, ctx, who.principal)
        else:
            call = ToolCall(
                id=f"mcp-{uuid.uuid4().hex}",
                name=params.name,
                arguments=dict(params.arguments or {}),
                run_id=who.run_id,
                principal=who.principal,
            )
            answer = await rounds.start(call, ctx)
        if isinstance(answer, str):
            return _refused(answer)
        if isinstance(answer, ToolResult):
            return mcp_result(answer, await _shown_images(platform, answer, who.run_id))
        return answer

    server: Server[Any] = Server(
        "stockade",
        instructions="Sandboxed tools; every call is checked by policy and audited.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    # 2026-07-28 rounds: the state a client echoes is sealed, bound to the tool and
    # arguments, and expires (the rounds check the principal themselves).
    server.middleware.append(
        RequestStateBoundary(
            RequestStateSecurity(keys=[os.urandom(32)], bind_principal=None),
            default_audience="stockade",
        )
    )
    return server


def _refused(why: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"refused: {why}")], is_error=True
    )

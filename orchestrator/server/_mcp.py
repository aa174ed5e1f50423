"""The platform's tools as an MCP server: every call through the gateway, as one principal.

Built on the official ``mcp`` SDK's low-level :class:`~mcp.server.lowlevel.Server`
(a tool list known only at run time). It validates nothing itself: the
gateway checks arguments, policy, rate limits and approvals, and audits.
A result maps to one text content (the output, or the status and error) with
the whole :class:`~orchestrator.tools.ToolResult` as structured content, and
``isError`` for every status but ``ok``.
"""

from __future__ import annotations

import uuid
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from orchestrator.platform import Platform
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

__all__ = ["mcp_result", "mcp_server"]


def mcp_result(result: ToolResult) -> types.CallToolResult:
    """A gateway result as MCP's: text content, the result as structured content, isError."""
    failed = result.status is not ToolStatus.OK
    text = result.output
    if failed:
        text = f"{result.status.value}: {result.error or 'the call failed'}"
        if result.output:
            text += f"\n{result.output}"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=result.model_dump(mode="json"),
        is_error=failed,
    )


def mcp_server(platform: Platform, *, principal: str, run_id: str) -> Server[Any]:
    """An MCP server of ``platform``'s tools; every call acts for ``principal`` in ``run_id``."""
    tools = [
        types.Tool(name=spec.name, description=spec.description, input_schema=spec.schema)
        for spec in platform.registry.tools()
    ]

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        _ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call = ToolCall(
            id=f"mcp-{uuid.uuid4().hex}",
            name=params.name,
            arguments=dict(params.arguments or {}),
            run_id=run_id,
            principal=principal,
        )
        return mcp_result(await platform.gateway.call(call))

    return Server(
        "stockade",
        instructions="Sandboxed tools; every call is checked by policy and audited.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )

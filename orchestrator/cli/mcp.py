"""``stockade mcp``: the platform's tools to an MCP client over stdio."""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path

import click

from orchestrator.cli._common import config_option, load, run_async
from orchestrator.platform import Platform

__all__ = ["mcp"]


@click.command()
@config_option
@click.option("--principal", help="Who every call acts for (policies, rate limits, the audit "
              "log). Default: the user running the command.")  # fmt: skip
@click.option("--run-id", help="The run every call belongs to (its workspace, rate limits and "
              "approvals). Default: a fresh one.")  # fmt: skip
def mcp(config_file: Path | None, principal: str | None, run_id: str | None) -> None:
    """Serve the tools as an MCP server over stdin and stdout (for IDEs and assistants).

    Every call goes through the gateway as PRINCIPAL: policy, approvals
    (decided with `stockade approvals`), rate limits and the audit log apply.
    """
    from mcp.server.stdio import stdio_server  # noqa: PLC0415 - only this command needs the SDK

    from orchestrator.server._mcp import mcp_server  # noqa: PLC0415 - and it imports the SDK

    loaded = load(config_file)
    who = principal or getpass.getuser()
    run = run_id or f"mcp-{uuid.uuid4().hex[:12]}"

    async def serve() -> None:
        async with Platform.open(loaded) as platform:
            server = mcp_server(platform, principal=who, run_id=run)
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())

    run_async(serve())

"""``stockade mcp``: the platform's tools to an MCP client over stdio."""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path

import click

from orchestrator.cli._common import config_option, load, run_async
from orchestrator.cli._owners import claim_run_id
from orchestrator.platform import Platform, check_configuration

__all__ = ["mcp"]


@click.command()
@config_option
@click.option("--principal", help="Who every call acts for (policies, rate limits, the audit "
              "log). Default: the user running the command.")  # fmt: skip
@click.option("--run-id", help="The run every call belongs to (its workspace, rate limits and "
              "approvals); refused when another principal used it first (over the HTTP API "
              "too). Default: a fresh one.")  # fmt: skip
def mcp(config_file: Path | None, principal: str | None, run_id: str | None) -> None:
    """Serve the tools as an MCP server over stdin and stdout (for IDEs and assistants).

    Every call goes through the gateway as PRINCIPAL: policy, approvals
    (decided with `stockade approvals` or the approval page; the client sees
    progress while a call waits, and is asked itself when the approvers file
    turns elicitation on), rate limits and the audit log apply.
    """
    from mcp.server.stdio import stdio_server  # noqa: PLC0415 - only this command needs the SDK

    # And these import the SDK.
    from orchestrator.server._mcp import McpCaller, mcp_server  # noqa: PLC0415
    from orchestrator.server._mcp_rounds import McpRounds  # noqa: PLC0415
    from orchestrator.server._mcp_waits import McpWaits, approval_page_url  # noqa: PLC0415

    loaded = load(config_file)
    who = principal or getpass.getuser()
    if run_id is not None:
        # Every call acts in that run (its workspace, its standing approvals): the id
        # is claimed as `stockade run` and the HTTP API claim theirs.
        claim_run_id(loaded.config, run_id, who)
    run = run_id or f"mcp-{uuid.uuid4().hex[:12]}"
    checked = check_configuration(loaded)
    server_settings = loaded.config.server
    waits = McpWaits(
        elicitation=checked.approvers.elicitation,
        self_approval=server_settings.self_approval,
        page_url=approval_page_url(server_settings.host, server_settings.port),
        redact_patterns=checked.policy.redact,
    )

    async def serve() -> None:
        async with Platform.open(loaded, approvers=[waits]) as platform:
            rounds = McpRounds(platform.gateway, waits)
            caller = McpCaller(principal=who, run_id=run)
            server = mcp_server(platform, caller, waits=waits, rounds=rounds)
            try:
                async with stdio_server() as (read_stream, write_stream):
                    options = server.create_initialization_options()
                    await server.run(read_stream, write_stream, options)
            finally:
                await rounds.aclose()

    run_async(serve())

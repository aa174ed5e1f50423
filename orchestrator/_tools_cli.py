"""``stockade tools …``: inspect the tools of the configured toolkits."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import click
import docker

from orchestrator._approvals_cli import DB_OPTION
from orchestrator.approvals import ApprovalRequest
from orchestrator.gateway import build_gateway
from orchestrator.paths import default_approvals_db, default_audit_log, default_policy
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolResult, ToolStatus

__all__ = ["TOOLKIT_OPTION", "external_toolkits", "toolkit_names", "tools"]


BUILTIN_TOOLKITS = ("toolkits.files", "toolkits.http", "toolkits.python", "toolkits.shell")


def toolkit_names(toolkits: tuple[str, ...]) -> tuple[str, ...]:
    """The toolkits named on the command line, else in $STOCKADE_TOOLKITS, else the built-ins."""
    configured = tuple(name for name in os.environ.get("STOCKADE_TOOLKITS", "").split(",") if name)
    return toolkits or configured or BUILTIN_TOOLKITS


def external_toolkits(toolkits: tuple[str, ...]) -> tuple[str, ...]:
    """The named toolkits that live outside ``toolkits/`` (baked into the image on request)."""
    return tuple(name for name in toolkit_names(toolkits) if name.split(".")[0] != "toolkits")


def _registry(toolkits: tuple[str, ...]) -> ToolRegistry:
    registry = ToolRegistry()
    for name in toolkit_names(toolkits):
        registry.load(name)
    return registry


TOOLKIT_OPTION = click.option(
    "--toolkit",
    "toolkits",
    multiple=True,
    help="Importable toolkit package (repeatable). Default: $STOCKADE_TOOLKITS "
    "(comma-separated), else the built-in toolkits.",
)


@click.group()
def tools() -> None:
    """Tools the model can call."""


@tools.command("list")
@TOOLKIT_OPTION
def tools_list(toolkits: tuple[str, ...]) -> None:
    """A table of the tools, their profiles and descriptions."""
    specs = _registry(toolkits).tools()
    if not specs:
        click.echo("no tools in the named toolkits")
        return
    width = max(len(spec.name) for spec in specs)
    click.echo(f"{'TOOL':<{width}}  {'PROFILE':<12}  DESCRIPTION")
    for spec in specs:
        summary = spec.description.splitlines()[0]
        click.echo(f"{spec.name:<{width}}  {spec.profile:<12}  {summary}")


@tools.command("schema")
@TOOLKIT_OPTION
@click.argument("name")
def tools_schema(toolkits: tuple[str, ...], name: str) -> None:
    """The tool NAME in OpenAI's function-calling format (JSON)."""
    registry = _registry(toolkits)
    spec = registry.get(name)
    if spec is None:
        known = ", ".join(s.name for s in registry.tools()) or "none"
        raise click.ClickException(f"unknown tool {name!r} (tools: {known})")
    click.echo(json.dumps(spec.openai(), indent=2))


async def _announce(request: ApprovalRequest, /) -> None:
    """Without a prompt, say how to decide the request from another terminal."""
    click.echo(
        f"waiting for approval of {request.tool} ({request.reason}): "
        f"stockade approvals approve {request.id}  |  stockade approvals deny {request.id}",
        err=True,
    )


@tools.command("call")
@TOOLKIT_OPTION
@click.argument("name")
@click.option("--args", "arguments", default="{}", show_default=True, help="Arguments as JSON.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory the tool sees as its workspace (kept afterwards).",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file. Default: $STOCKADE_POLICY, else policies/default.yaml.",
)
@click.option("--principal", help="Who the call acts for (policy rules and rate limits use it).")
@click.option(
    "--approvers",
    "approvers_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Approvers file (auto rules, webhook).",
)
@click.option(
    "--prompt/--no-prompt",
    default=None,
    help="Ask at this terminal when the call needs approval. Default: when stdin is a terminal.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: $STOCKADE_AUDIT_LOG, else $STOCKADE_HOME/audit.jsonl.",
)
@DB_OPTION
def tools_call(  # click passes every option by keyword
    *,
    toolkits: tuple[str, ...],
    name: str,
    arguments: str,
    workspace: Path | None,
    policy_path: Path | None,
    principal: str | None,
    approvers_path: Path | None,
    prompt: bool | None,
    audit_log: Path | None,
    db: Path | None,
) -> None:
    """Run one call of tool NAME through the gateway, exactly as an agent would; print the result.

    The call is validated, decided by the policy, rate-limited, approved if
    the policy asks for it, run in a sandbox and recorded in the audit log.
    Exits 0 when the call succeeded, 1 otherwise. Example:

        stockade tools call python.run --args '{"code": "print(6 * 7)"}'
    """
    registry = _registry(toolkits)
    # A --workspace directory is the workspace of a run named after it, held by its parent.
    run_id = workspace.resolve().name if workspace else None
    call = ToolCall(id="cli", name=name, arguments=arguments, run_id=run_id, principal=principal)
    workspaces = WorkspaceManager(workspace.resolve().parent) if workspace else None
    terminal = sys.stdin.isatty() if prompt is None else prompt

    async def run() -> ToolResult:
        client = docker.from_env()
        images = ImageBuilder(client, toolkits=external_toolkits(toolkits))
        async with DockerBackend(client, images=images) as backend:
            gateway = build_gateway(
                ToolExecutor(registry, backend, workspaces=workspaces),
                policy=policy_path or default_policy(),
                audit_log=audit_log or default_audit_log(),
                approvals_db=db or default_approvals_db(),
                approvers=approvers_path,
                terminal=terminal,
                extra_approvers=() if terminal else (_announce,),
            )
            return await gateway.call(call)

    result = asyncio.run(run())
    click.echo(result.model_dump_json(indent=2))
    sys.exit(0 if result.status is ToolStatus.OK else 1)

"""``stockade tools …``: list the configured tools, show their schemas, call one (gateway)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path, PurePosixPath

import click

from orchestrator.approvals import ApprovalRequest
from orchestrator.artifacts import ArtifactStore
from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo_json,
    echo_untrusted,
    json_option,
    load,
    not_found,
    run_async,
    table,
    toolkit_option,
)
from orchestrator.cli._owners import check_run_id_owner, claim_run_id
from orchestrator.display import is_well_formed
from orchestrator.platform import Platform, build_registry
from orchestrator.runid import run_id_problem
from orchestrator.tools import ToolCall, ToolRegistry, ToolResult, ToolSpec, ToolStatus

__all__ = ["tools"]


@click.group()
def tools() -> None:
    """Tools the model can call."""


@tools.command("list")
@config_option
@toolkit_option
@json_option
def tools_list(config_file: Path | None, toolkits: tuple[str, ...], as_json: bool) -> None:
    """The configured toolkits' tools, their sandbox profiles and what they do."""
    specs = build_registry(load(config_file, toolkits=toolkits)).tools()
    if as_json:
        echo_json([{"name": s.name, "profile": s.profile, "description": s.description}
                   for s in specs])  # fmt: skip
        return
    table(
        ["TOOL", "PROFILE", "DESCRIPTION"],
        [(s.name, s.profile, s.description.splitlines()[0]) for s in specs],
    )


@tools.command("schema")
@config_option
@toolkit_option
@click.argument("name")
def tools_schema(config_file: Path | None, toolkits: tuple[str, ...], name: str) -> None:
    """The tool NAME in OpenAI's function-calling format (JSON)."""
    echo_json(_known_tool(build_registry(load(config_file, toolkits=toolkits)), name).openai())


def _known_tool(registry: ToolRegistry, name: str) -> ToolSpec:
    """The tool ``name`` (either spelling), or the error naming the ones there are."""
    spec = registry.get(name)
    if spec is None:
        known = ", ".join(s.name for s in registry.tools()) or "none"
        raise not_found(f"unknown tool {name!r} (tools: {known})")
    return spec


async def _announce(request: ApprovalRequest, /) -> None:
    """Without a prompt, say how to decide the request from another terminal."""
    click.echo(
        f"waiting for approval of {request.tool} ({request.reason}): "
        f"stockade approvals approve {request.id}  |  stockade approvals deny {request.id}",
        err=True,
    )


def _read_arguments(text: str) -> str:
    """``--args``: JSON itself, ``@FILE``, or ``-`` for standard input.

    A file or standard input has no size limit of its own (one command-line
    argument is capped near 128 KB by the operating system); the registry
    still bounds what a tool accepts.
    """
    if text == "-":
        try:  # bytes, decoded strictly: not the surrogates Python makes of other encodings
            return sys.stdin.buffer.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read standard input: {exc}", param_hint="--args"
            ) from exc
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--args") from exc
    if not is_well_formed(text):  # an argument in another encoding, as Python keeps it
        raise click.BadParameter("is not UTF-8 text", param_hint="--args")
    return text


ARTIFACTS_DIR = "stockade-artifacts"
"""Where ``tools call`` writes a call's artifacts by default: ``./stockade-artifacts/<call id>``."""


def _write_artifacts(store: ArtifactStore, result: ToolResult, run_id: str, target: Path) -> None:
    """Write the call's artifacts into ``target`` under their names (blocking).

    The names passed the hostile reader already; they are checked again
    here, and each file is created new, never through a link.
    """
    for artifact in result.artifacts:
        name = PurePosixPath(artifact.name)
        if name.is_absolute() or ".." in name.parts:
            raise click.ClickException(f"refusing artifact name {artifact.name!r}")
        path = target.joinpath(*name.parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with os.fdopen(os.open(path, flags, 0o600), "wb") as handle:
                handle.write(store.read(run_id, artifact))
        except OSError as exc:
            raise click.ClickException(f"cannot write artifact {artifact.name}: {exc}") from exc


def _check_workspace_directory(path: Path) -> None:
    """Refuse a ``--workspace`` the call could not use, before anything runs (click has
    refused a file already)."""
    parent = path.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise click.UsageError(
            f"--workspace {path}: its parent directory {parent} is not writable; Stockade "
            "keeps the workspace's lock and a call's staged changes beside it"
        )


def _show(result: ToolResult) -> None:
    duration = f"{result.duration_s * 1000:.0f} ms" if result.duration_s else ""
    click.echo(
        f"{result.status.value}  {result.name}  {duration}  (call {result.call_id})", err=True
    )
    if result.output:
        echo_untrusted(result.output)
    if result.error:
        echo_untrusted(result.error, err=True)
    if result.truncated:
        click.echo("(output truncated)", err=True)
    for line in result.notes():  # artifact and file names the sandbox chose
        echo_untrusted(line, err=True)


@tools.command("call")
@config_option
@toolkit_option
@json_option
@click.argument("name")
@click.option(
    "--args",
    "arguments",
    default="{}",
    show_default=True,
    help="Arguments as JSON; @FILE reads them from a file, - from standard input.",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory the tool sees as its workspace (kept afterwards).",
)
@click.option("--run-id", help="Run the call belongs to (its workspace, limits and approvals); "
              "claimed for --principal, refused when another principal owns it.")  # fmt: skip
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory the call's artifacts (files it wrote under outputs/) are written to. "
    f"Default: ./{ARTIFACTS_DIR}/<call id>.",
)
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Policy file (overrides the configuration).")  # fmt: skip
@click.option("--runtime", type=click.Choice(["runc", "runsc"]),
              help="Runtime of profiles that name none (overrides the configuration).")  # fmt: skip
@click.option("--principal", help="Who the call acts for (policy rules and rate limits use it).")
@click.option("--approvers", "approvers_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Approvers file (auto rules, webhook).")  # fmt: skip
@click.option(
    "--prompt/--no-prompt",
    default=None,
    help="Ask at this terminal when the call needs approval. Default: when stdin is a terminal.",
)
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Audit log (overrides the configuration).")  # fmt: skip
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="Approval database (overrides the configuration).")  # fmt: skip
def tools_call(  # click passes every option by keyword
    *,
    config_file: Path | None,
    toolkits: tuple[str, ...],
    as_json: bool,
    name: str,
    arguments: str,
    workspace: Path | None,
    run_id: str | None,
    artifacts_dir: Path | None,
    policy_path: Path | None,
    runtime: str | None,
    principal: str | None,
    approvers_path: Path | None,
    prompt: bool | None,
    audit_log: Path | None,
    db: Path | None,
) -> None:
    """Run one call of tool NAME through the gateway, exactly as an agent would.

    The call is validated, decided by the policy, rate-limited, approved if
    the policy asks for it, run in a sandbox and recorded in the audit log.
    Exits 0 when the call succeeded, 1 otherwise, 2 when no configured toolkit
    has a tool NAME or another principal owns --run-id (said before the engine
    is reached). With a workspace (`--workspace`
    or `--run-id`), files the call writes under `outputs/` come back as artifacts,
    written to `--artifacts-dir` (the directory is printed). Example:

        stockade tools call python.run --args '{"code": "print(6 * 7)"}'
    """
    if workspace is not None and run_id is not None:
        raise click.UsageError("give --workspace or --run-id, not both")
    # A --workspace directory is the workspace of a run named after it, held by its parent.
    workspaces_dir = None
    what = "--run-id"
    if workspace is not None:
        resolved = workspace.resolve()
        _check_workspace_directory(resolved)
        workspaces_dir, run_id = resolved.parent, resolved.name
        what = "--workspace directory's name (it names its run)"
    if run_id is not None and (problem := run_id_problem(run_id, what=what)):
        raise click.UsageError(problem)
    loaded = load(
        config_file,
        toolkits=toolkits,
        policy=policy_path,
        workspaces_dir=workspaces_dir,
        **{
            "sandbox.runtime": runtime,
            "audit.path": audit_log,
            "approvals.database": db,
            "approvals.approvers": approvers_path,
        },
    )
    # A mistyped name is the operator's mistake and needs no engine: said first, so it is
    # not hidden behind "the engine is down". Only the name is looked at here; the call
    # itself (arguments, policy, limits, audit) is still the gateway's alone.
    _known_tool(build_registry(loaded), name)
    if workspace is None and run_id is not None:  # a --workspace is no run of the server's
        if principal is None:  # a call without a principal cannot own a run
            check_run_id_owner(loaded.config, run_id, None)
        else:
            # What the call leaves in the workspace is the principal's: the id is claimed
            # as `stockade run` claims it, or the API's first caller of the id would own it.
            claim_run_id(loaded.config, run_id, principal)
    call = ToolCall(
        id=f"cli-{uuid.uuid4().hex}",
        name=name,
        arguments=_read_arguments(arguments),
        run_id=run_id,
        principal=principal,
    )
    terminal = sys.stdin.isatty() if prompt is None else prompt

    async def run() -> ToolResult:
        async with Platform.open(
            loaded, terminal=terminal, approvers=() if terminal else (_announce,), pools=False
        ) as platform:
            answer = await platform.gateway.call(call)
            if answer.artifacts and call.run_id:
                await asyncio.to_thread(
                    _write_artifacts, platform.artifacts, answer, call.run_id, target
                )
            return answer

    target = artifacts_dir or Path.cwd() / ARTIFACTS_DIR / call.id
    result = run_async(run())
    if result.artifacts:
        click.echo(f"artifacts written to {target}", err=True)
    if as_json:
        echo_json(result.model_dump(mode="json"))
    else:
        _show(result)
    sys.exit(EXIT_OK if result.status is ToolStatus.OK else EXIT_FAILED)

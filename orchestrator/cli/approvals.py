"""``stockade approvals …``: decide pending approval requests from any terminal."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.approvals import ApprovalScope, ApprovalStatus, ApprovalStore
from orchestrator.cli._common import (
    EXIT_FAILED,
    config_option,
    echo_json,
    json_option,
    load,
    not_found,
    table,
)
from orchestrator.display import json_for_people
from orchestrator.errors import UsageError

__all__ = ["approvals"]


def _store(config_file: Path | None, db: Path | None) -> ApprovalStore:
    flags: dict[str, Any] = {"approvals.database": db}
    return ApprovalStore(load(config_file, **flags).config.approvals_db)


DB_OPTION = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Approval database (overrides the configuration).",
)


@click.group()
def approvals() -> None:
    """Approval requests."""


@approvals.command("list")
@config_option
@DB_OPTION
@json_option
@click.option("--all", "everything", is_flag=True, help="Decided and expired ones too.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many, the newest.")  # fmt: skip
def approvals_list(
    config_file: Path | None, db: Path | None, as_json: bool, everything: bool, limit: int
) -> None:
    """Pending requests (oldest first); with --all, decided and expired ones too."""
    wanted = None if everything else ApprovalStatus.PENDING
    requests, more = _store(config_file, db).newest(wanted, limit)
    if as_json:
        echo_json([request.model_dump(mode="json") for request in requests])
        return
    if not requests:
        click.echo("no requests")
        return
    rows = []
    for request in requests:
        if request.is_grant:
            used = f"granted for the run ({request.scope.value})"
        elif request.consumed_by is not None:
            used = f"used by call {request.consumed_by}"
        else:
            used = ""
        rows.append((request.id, request.status.value, request.tool,
                     request.run_id or "-", request.reason, used))  # fmt: skip
    table(["ID", "STATUS", "TOOL", "RUN", "REASON", "USE"], rows)
    if more:
        click.echo(f"older requests not shown: raise --limit (now {limit})", err=True)


@approvals.command("show")
@config_option
@DB_OPTION
@click.argument("request_id")
def approvals_show(config_file: Path | None, db: Path | None, request_id: str) -> None:
    """One request in full, as JSON."""
    request = _store(config_file, db).get(request_id)
    if request is None:
        raise not_found(f"no approval request {request_id!r}")
    # The arguments as a person must read them (no character hides or reorders text).
    click.echo(json_for_people(request.model_dump(mode="json")))


_NOTE = click.option("--note", help="Why (on a denial, the model reads it).")


def _decide(
    config_file: Path | None,
    db: Path | None,
    request_id: str,
    *,
    approve: bool,
    arguments: str | None,
    note: str | None,
    scope: ApprovalScope = ApprovalScope.ONCE,
) -> None:
    try:
        edited = json.loads(arguments) if arguments else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from exc
    store = _store(config_file, db)
    try:
        decided = store.decide(
            request_id, approve=approve, by=getpass.getuser(), arguments=edited, note=note,
            scope=scope,
        )  # fmt: skip
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    if decided:
        what = "approved" if approve else "denied"
        if scope is not ApprovalScope.ONCE:
            request = store.get(request_id)
            run = request.run_id if request else "?"
            what = f"approved for the rest of run {run} ({scope.value})"
        click.echo(f"{request_id}: {what}")
        return
    request = store.get(request_id)
    if request is None:
        raise not_found(f"no approval request {request_id!r}")
    click.echo(f"{request_id}: not decided (it is {request.status.value})", err=True)
    sys.exit(EXIT_FAILED)


@approvals.command("approve")
@config_option
@DB_OPTION
@click.argument("request_id")
@click.option("--args", "arguments", help="Replace the call's arguments (JSON object).")
@click.option(
    "--scope",
    type=click.Choice([scope.value for scope in ApprovalScope]),
    default=ApprovalScope.ONCE.value,
    show_default=True,
    help="once: this one execution (an identical later call asks again). "
    "run-identical: also every later call of the run with the same tool and arguments. "
    "run: every later call of the run to the same tool that the same rule sends for approval.",
)
@_NOTE
def approvals_approve(  # click passes every option by keyword
    *,
    config_file: Path | None,
    db: Path | None,
    request_id: str,
    arguments: str | None,
    scope: str,
    note: str | None,
) -> None:
    """Approve a pending request, optionally with edited arguments or for the rest of its run."""
    _decide(
        config_file,
        db,
        request_id,
        approve=True,
        arguments=arguments,
        note=note,
        scope=ApprovalScope(scope),
    )


@approvals.command("deny")
@config_option
@DB_OPTION
@click.argument("request_id")
@_NOTE
def approvals_deny(
    config_file: Path | None, db: Path | None, request_id: str, note: str | None
) -> None:
    """Deny a pending request."""
    _decide(config_file, db, request_id, approve=False, arguments=None, note=note)

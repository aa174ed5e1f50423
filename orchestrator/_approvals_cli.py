"""``stockade approvals …``: decide pending approval requests from any terminal."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from orchestrator.approvals import ApprovalScope, ApprovalStatus, ApprovalStore
from orchestrator.paths import default_approvals_db

__all__ = ["DB_OPTION", "approvals"]


def _store(db: Path | None) -> ApprovalStore:
    return ApprovalStore(db or default_approvals_db())


DB_OPTION = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Approval database. Default: $STOCKADE_APPROVALS_DB, else $STOCKADE_HOME/approvals.db.",
)


@click.group()
def approvals() -> None:
    """Approval requests."""


@approvals.command("list")
@DB_OPTION
@click.option("--all", "everything", is_flag=True, help="Decided and expired ones too.")
def approvals_list(db: Path | None, everything: bool) -> None:
    """Pending requests (oldest first)."""
    requests = _store(db).find(None if everything else ApprovalStatus.PENDING)
    for request in requests:
        if request.is_grant:
            used = f"  granted for the run ({request.scope.value})"
        elif request.consumed_by is not None:
            used = f"  used by call {request.consumed_by}"
        else:
            used = ""
        click.echo(
            f"{request.id}  {request.status.value:<8}  {request.tool:<14}  "
            f"run={request.run_id or '-'}  {request.reason}{used}"
        )
    if not requests:
        click.echo("no requests")


@approvals.command("show")
@DB_OPTION
@click.argument("request_id")
def approvals_show(db: Path | None, request_id: str) -> None:
    """One request in full, as JSON."""
    request = _store(db).get(request_id)
    if request is None:
        raise click.ClickException(f"no approval request {request_id!r}")
    click.echo(request.model_dump_json(indent=2))


_NOTE = click.option("--note", help="Why (on a denial, the model reads it).")


def _decide(
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
    store = _store(db)
    try:
        decided = store.decide(
            request_id, approve=approve, by=getpass.getuser(), arguments=edited, note=note,
            scope=scope,
        )  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if decided:
        what = "approved" if approve else "denied"
        if scope is not ApprovalScope.ONCE:
            request = store.get(request_id)
            run = request.run_id if request else "?"
            what = f"approved for the rest of run {run} ({scope.value})"
        click.echo(f"{request_id}: {what}")
        return
    request = store.get(request_id)
    state = request.status.value if request else "unknown"
    click.echo(f"{request_id}: not decided (it is {state})", err=True)
    sys.exit(1)


@approvals.command("approve")
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
def approvals_approve(
    db: Path | None, request_id: str, arguments: str | None, scope: str, note: str | None
) -> None:
    """Approve a pending request, optionally with edited arguments or for the rest of its run."""
    _decide(
        db, request_id, approve=True, arguments=arguments, note=note, scope=ApprovalScope(scope)
    )


@approvals.command("deny")
@DB_OPTION
@click.argument("request_id")
@_NOTE
def approvals_deny(db: Path | None, request_id: str, note: str | None) -> None:
    """Deny a pending request."""
    _decide(db, request_id, approve=False, arguments=None, note=note)

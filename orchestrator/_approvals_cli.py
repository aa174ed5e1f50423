"""``stockade approvals …``: decide pending approval requests from any terminal."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from orchestrator.approvals import ApprovalStatus, ApprovalStore
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
        click.echo(
            f"{request.id}  {request.status.value:<8}  {request.tool:<14}  "
            f"run={request.run_id or '-'}  {request.reason}"
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
    db: Path | None, request_id: str, *, approve: bool, arguments: str | None, note: str | None
) -> None:
    edited = json.loads(arguments) if arguments else None
    store = _store(db)
    if store.decide(request_id, approve=approve, by=getpass.getuser(), arguments=edited, note=note):
        click.echo(f"{request_id}: {'approved' if approve else 'denied'}")
        return
    request = store.get(request_id)
    state = request.status.value if request else "unknown"
    click.echo(f"{request_id}: not decided (it is {state})", err=True)
    sys.exit(1)


@approvals.command("approve")
@DB_OPTION
@click.argument("request_id")
@click.option("--args", "arguments", help="Replace the call's arguments (JSON object).")
@_NOTE
def approvals_approve(
    db: Path | None, request_id: str, arguments: str | None, note: str | None
) -> None:
    """Approve a pending request, optionally with edited arguments."""
    _decide(db, request_id, approve=True, arguments=arguments, note=note)


@approvals.command("deny")
@DB_OPTION
@click.argument("request_id")
@_NOTE
def approvals_deny(db: Path | None, request_id: str, note: str | None) -> None:
    """Deny a pending request."""
    _decide(db, request_id, approve=False, arguments=None, note=note)

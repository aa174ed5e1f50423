"""``stockade tokens …``: API tokens for ``stockade serve``, issued, listed and revoked."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from orchestrator.cli._common import (
    EXIT_FAILED,
    config_option,
    echo_json,
    json_option,
    load,
    not_found,
    table,
)
from orchestrator.errors import UsageError
from orchestrator.server import Role, TokenInfo, TokenStore

__all__ = ["tokens"]


def _store(config_file: Path | None) -> TokenStore:
    return TokenStore(load(config_file).config.tokens_db)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _document(info: TokenInfo) -> dict[str, object]:
    return {
        "id": info.id,
        "principal": info.principal,
        "roles": sorted(info.roles),
        "note": info.note,
        "created_at": _when(info.created_at),
        "revoked_at": _when(info.revoked_at) or None,
    }


@click.group()
def tokens() -> None:
    """API tokens: who may use the HTTP API (stockade serve), as which principal and role."""


@tokens.command("create")
@config_option
@json_option
@click.option("--principal", required=True, help="Who the token acts for (policies see it).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="caller: call tools and start runs; approver: decide approvals; viewer: read its "
    "principal's runs (the run timeline pages); admin: everything. Repeatable.",
)
@click.option("--note", help="What the token is for (shown by `tokens list`).")
def tokens_create(
    *, config_file: Path | None, as_json: bool, principal: str, roles: tuple[str, ...],
    note: str | None,
) -> None:  # fmt: skip
    """Issue a token. It is printed once, on standard output; only its SHA-256 is kept."""
    store = _store(config_file)
    try:
        issued = store.create(principal=principal, roles=(Role(r) for r in roles), note=note)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        echo_json({**_document(issued.info), "token": issued.token})
        return
    click.echo(issued.token)
    click.echo(
        f"token {issued.info.id} for {principal} ({', '.join(sorted(issued.info.roles))}); "
        "store it now: it cannot be shown again",
        err=True,
    )


@tokens.command("list")
@config_option
@json_option
@click.option("--all", "everything", is_flag=True, help="Revoked tokens too.")
def tokens_list(config_file: Path | None, as_json: bool, everything: bool) -> None:
    """The tokens (never their secrets), oldest first."""
    store = _store(config_file)
    try:
        found = store.tokens(include_revoked=everything)
    finally:
        store.close()
    if as_json:
        echo_json([_document(info) for info in found])
        return
    if not found:
        click.echo("no tokens")
        return
    table(
        ["ID", "PRINCIPAL", "ROLES", "CREATED", "REVOKED", "NOTE"],
        [
            (
                info.id,
                info.principal,
                ",".join(sorted(info.roles)),
                _when(info.created_at),
                _when(info.revoked_at),
                info.note,
            )
            for info in found
        ],
    )


@tokens.command("revoke")
@config_option
@click.argument("token_id")
def tokens_revoke(config_file: Path | None, token_id: str) -> None:
    """Revoke token TOKEN_ID (see `tokens list`); a running server refuses it at once."""
    store = _store(config_file)
    try:
        revoked = store.revoke(token_id)
        known = revoked or any(info.id == token_id for info in store.tokens(include_revoked=True))
    finally:
        store.close()
    if not known:  # quoted as typed: an id that names nothing is a mistake in the command
        raise not_found(f"no token {token_id!r} (see `stockade tokens list --all`)")
    if not revoked:  # like a decided approval request: it exists, the change did not happen
        click.echo(f"{token_id}: not revoked (it was revoked already)", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{token_id}: revoked")

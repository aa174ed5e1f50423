"""Tokens: issued once, stored as SHA-256 only, listed and revoked from the command line."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.errors import UsageError
from orchestrator.server import Role, TokenStore


def test_only_the_hash_is_stored_and_the_file_is_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    issued = store.create(principal="alice", roles=[Role.CALLER], note="ci")
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("tokens.db"))
    assert issued.token.encode() not in raw
    secret = issued.token.rsplit("_", 1)[1]
    assert secret.encode() not in raw
    assert hashlib.sha256(issued.token.encode()).hexdigest().encode() in raw
    assert stat.S_IMODE((tmp_path / "tokens.db").stat().st_mode) == 0o600


def test_authenticate_knows_active_tokens_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    assert not store.ever_issued() and not store.has_active()
    alice = store.create(principal="alice", roles=[Role.CALLER, Role.APPROVER])
    info = store.authenticate(alice.token)
    assert info is not None
    assert (info.principal, info.roles) == ("alice", frozenset({Role.CALLER, Role.APPROVER}))
    assert store.authenticate(alice.token + "x") is None
    assert store.authenticate(alice.token.replace(alice.info.id, "0" * 12)) is None
    assert store.authenticate("") is None
    # Revoked by another store (another process): refused at the next look.
    other = TokenStore(tmp_path / "tokens.db")
    assert other.revoke(alice.info.id)
    assert not other.revoke(alice.info.id)
    other.close()
    assert store.authenticate(alice.token) is None
    assert store.ever_issued() and not store.has_active()
    store.close()


def test_principals_and_roles_are_checked(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    with pytest.raises(UsageError, match="principal"):
        store.create(principal="al ice", roles=[Role.CALLER])
    with pytest.raises(UsageError, match="principal"):  # Python's "$" matches before "\n"
        store.create(principal="alice\n", roles=[Role.CALLER])
    with pytest.raises(UsageError, match="role"):
        store.create(principal="alice", roles=[])
    store.close()


def test_the_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("server: {tokens: server/tokens.db}\n")  # relative to the file
    runner = CliRunner()
    base = ["--config", str(config)]
    created = runner.invoke(
        cli, ["tokens", "create", *base, "--principal", "alice", "--role", "caller",
              "--role", "approver", "--note", "ci bot"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("stk_")
    assert "cannot be shown again" in created.stderr
    as_json = runner.invoke(
        cli, ["tokens", "create", *base, "--principal", "bob", "--role", "admin", "--json"]
    )
    assert json.loads(as_json.stdout)["roles"] == ["admin"]

    listed = runner.invoke(cli, ["tokens", "list", *base])
    assert "alice" in listed.output and "approver,caller" in listed.output
    assert "ci bot" in listed.output and token not in listed.output
    token_id = token.split("_")[1]
    revoked = runner.invoke(cli, ["tokens", "revoke", *base, token_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    again = runner.invoke(cli, ["tokens", "revoke", *base, token_id])
    assert again.exit_code == 1
    active = json.loads(runner.invoke(cli, ["tokens", "list", *base, "--json"]).stdout)
    assert [t["principal"] for t in active] == ["bob"]
    everything = json.loads(runner.invoke(cli, ["tokens", "list", *base, "--json", "--all"]).stdout)
    assert [t["revoked_at"] is not None for t in everything] == [True, False]
    wrong = runner.invoke(cli, ["tokens", "create", *base, "--principal", "x", "--role", "root"])
    assert wrong.exit_code == 2
    assert (tmp_path / "server" / "tokens.db").exists()

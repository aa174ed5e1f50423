"""Where the server listens, and the token-less loopback mode before any token exists."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.errors import ConfigError
from orchestrator.server import Role, TokenStore, check_bind, is_loopback_host
from orchestrator.testing.backend import ScriptedBackend

from .conftest import serve, server_config

CALL = {"id": "c1", "name": "python.run", "arguments": {"code": "1"}, "run_id": "r1"}


def test_loopback_is_recognised() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", ""):
        assert not is_loopback_host(host), host


def test_anything_but_loopback_needs_an_active_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    check_bind("127.0.0.1", store)
    with pytest.raises(ConfigError, match="stockade tokens create") as caught:
        check_bind("0.0.0.0", store)
    assert caught.value.field == "server.host"
    issued = store.create(principal="alice", roles=[Role.CALLER])
    check_bind("0.0.0.0", store)
    store.revoke(issued.info.id)
    with pytest.raises(ConfigError):
        check_bind("::", store)
    store.close()


def test_the_cli_refuses_to_listen_on_all_addresses_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("server: {host: 0.0.0.0, tokens: tokens.db}\n")
    refused = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert isinstance(refused.exception, ConfigError)
    assert "not a loopback address" in str(refused.exception)
    flag = CliRunner().invoke(cli, ["serve", "--config", str(config), "--host", "10.1.2.3"])
    assert isinstance(flag.exception, ConfigError)


async def test_the_application_refuses_to_start_on_all_addresses_without_a_token(
    tmp_path: Path,
) -> None:
    config = server_config(tmp_path / "state", host="0.0.0.0")
    with pytest.raises(RuntimeError, match="not a loopback address"):
        async with serve(config, backend=ScriptedBackend()):
            pass


async def test_before_any_token_loopback_requests_act_as_the_local_user(tmp_path: Path) -> None:
    config = server_config(tmp_path / "state")
    async with serve(config, backend=ScriptedBackend()) as running, running.client() as client:
        answer = await client.post("/v1/tool-calls", json=CALL)
        approvals = await client.get("/v1/approvals")
        rebound = await client.get("/v1/tools", headers={"Host": "attacker.example:8787"})
        cross_site = await client.get("/v1/tools", headers={"Origin": "https://attacker.example"})
        # Another local server's page (a dev server, a notebook): same site, another origin.
        other_port = await client.post(
            "/v1/tool-calls", json=CALL, headers={"Origin": "http://localhost:3000"}
        )
        port = running.url.rsplit(":", 1)[1]
        own_page = await client.get("/v1/tools", headers={"Origin": f"http://localhost:{port}"})

        store = TokenStore(config.tokens_db)
        issued = store.create(principal="alice", roles=[Role.CALLER])
        after = await client.get("/v1/tools")
        store.revoke(issued.info.id)
        revoked = await client.get("/v1/tools")  # the first token ended this for good
        store.close()
    assert answer.json()["status"] == "ok"
    assert approvals.status_code == 200
    (record,) = [r for r in running.audit_records() if r["event"] == "call"]
    assert record["principal"] == getpass.getuser()
    for refused in (rebound, cross_site, other_port):
        assert refused.status_code == 403
        assert refused.json()["code"] == "host_not_allowed"
    assert own_page.status_code == 200
    assert after.status_code == revoked.status_code == 401


async def test_the_token_less_mode_can_be_switched_off(tmp_path: Path) -> None:
    config = server_config(tmp_path / "state", unauthenticated_loopback=False)
    async with serve(config, backend=ScriptedBackend()) as running, running.client() as client:
        answer = await client.get("/v1/tools")
    assert answer.status_code == 401

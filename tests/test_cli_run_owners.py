"""The command line respects the run ids the HTTP API gave to a principal (the first to use
an id owns it), and `stockade run --run-id` claims its id the same way."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from orchestrator.cli._common import EXIT_FAILED, EXIT_USAGE
from orchestrator.runowners import RunOwners

RUN = ("run", "a goal", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")


def stockade(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # No engine: a refusal must come before it is needed, and anything let through
    # stops at "cannot reach the Docker engine" without running.
    env = {**os.environ, "STOCKADE_HOME": str(home),
           "DOCKER_HOST": f"unix://{home}/no-engine.sock"}  # fmt: skip
    env.pop("STOCKADE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def claimed_over_the_api(home: Path, run_id: str, principal: str) -> None:
    """What `POST /v1/tool-calls` (or `/v1/runs`) does first: claim the id in tokens.db."""
    assert asyncio.run(RunOwners(home / "tokens.db").claim(run_id, principal))


def test_run_refuses_a_run_id_another_principal_claimed(tmp_path: Path) -> None:
    claimed_over_the_api(tmp_path, "shared", "alice")
    done = stockade(*RUN, "--run-id", "shared", "--principal", "bob", home=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "run id 'shared' belongs to principal 'alice'" in done.stderr
    assert "engine" not in done.stderr
    # Its owner passes the check (and stops at the missing engine).
    own = stockade(*RUN, "--run-id", "shared", "--principal", "alice", home=tmp_path)
    assert own.returncode == EXIT_FAILED and "cannot reach the Docker engine" in own.stderr


def test_run_claims_its_run_id_for_its_principal(tmp_path: Path) -> None:
    """The API must then refuse the id to anyone else, as it does an id it gave out."""
    stockade(*RUN, "--run-id", "mine", "--principal", "bob", home=tmp_path)
    tokens_db = tmp_path / "tokens.db"
    assert RunOwners(tokens_db).owner("mine") == "bob"
    assert stat.S_IMODE(tokens_db.stat().st_mode) == 0o600
    assert not asyncio.run(RunOwners(tokens_db).claim("mine", "alice"))


def test_tools_call_refuses_a_run_id_another_principal_claimed(tmp_path: Path) -> None:
    claimed_over_the_api(tmp_path, "shared", "alice")
    call = ("tools", "call", "files.list", "--run-id", "shared")
    for who in (("--principal", "bob"), ()):  # no principal cannot act in alice's run either
        done = stockade(*call, *who, home=tmp_path)
        assert done.returncode == EXIT_USAGE, done.stderr
        assert "run id 'shared' belongs to principal 'alice'" in done.stderr
    own = stockade(*call, "--principal", "alice", home=tmp_path)
    assert own.returncode == EXIT_FAILED and "cannot reach the Docker engine" in own.stderr


def test_tools_call_claims_its_run_id_for_its_principal(tmp_path: Path) -> None:
    """Its workspace and artifacts were left to whoever called with the id over the API
    first, who then read them (files.read, GET /v1/runs/{id}/artifacts)."""
    stockade("tools", "call", "files.list", "--run-id", "mine", "--principal", "bob",
             home=tmp_path)  # fmt: skip
    owners = RunOwners(tmp_path / "tokens.db")
    assert owners.owner("mine") == "bob"
    assert not asyncio.run(owners.claim("mine", "alice"))
    # Without a principal the call owns nothing (nor can it act in a run someone owns).
    stockade("tools", "call", "files.list", "--run-id", "anyones", home=tmp_path)
    assert owners.owner("anyones") is None


def test_mcp_refuses_a_run_id_another_principal_claimed_and_claims_its_own(
    tmp_path: Path,
) -> None:
    claimed_over_the_api(tmp_path, "shared", "alice")
    done = stockade("mcp", "--run-id", "shared", "--principal", "bob", home=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "run id 'shared' belongs to principal 'alice'" in done.stderr
    bad = stockade("mcp", "--run-id", "../up", "--principal", "bob", home=tmp_path)
    assert bad.returncode == EXIT_USAGE and "run id" in bad.stderr, bad.stderr
    # Its own id is claimed before the server starts (it then stops at the missing engine).
    stockade("mcp", "--run-id", "mine", "--principal", "bob", home=tmp_path)
    assert RunOwners(tmp_path / "tokens.db").owner("mine") == "bob"

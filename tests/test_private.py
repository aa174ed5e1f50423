"""The state directory's databases are private to the orchestrator's user, whatever the umask."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.agent._durable import RunStore
from orchestrator.agent.memory._long_term import LongTermMemory
from orchestrator.approvals import ApprovalStore
from orchestrator.policy import SqliteLimitStore
from orchestrator.private import private_file
from orchestrator.server._roles import Role
from orchestrator.server._tokens import TokenStore


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual 022: a file made without care is readable by everyone."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _approvals(path: Path) -> None:
    ApprovalStore(path)


def _limits(path: Path) -> None:
    store = SqliteLimitStore(path)
    store.close()


def _memory(path: Path) -> None:
    LongTermMemory(path, embedder_name="hash", dimension=8).close()


def _runs(path: Path) -> None:
    RunStore(path).close_thread_connection()


def _tokens(path: Path) -> None:
    store = TokenStore(path)
    with contextlib.closing(store):
        store.create(principal="alice", roles=[Role.CALLER])


@pytest.mark.parametrize("open_store", [_approvals, _limits, _memory, _runs, _tokens])
def test_each_database_and_its_journal_are_private(
    tmp_path: Path, open_store: Callable[[Path], None]
) -> None:
    path = tmp_path / "state" / "some.db"
    open_store(path)
    assert _mode(path.parent) == 0o700
    made = sorted(path.parent.iterdir())
    assert path in made
    assert {file.name: _mode(file) for file in made} == {file.name: 0o600 for file in made}


def test_an_existing_file_open_to_others_is_closed_to_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.write_bytes(b"kept")
    path.chmod(0o644)
    private_file(path)
    assert (_mode(path), path.read_bytes()) == (0o600, b"kept")


def test_never_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    target.chmod(0o644)
    (tmp_path / "link.db").symlink_to(target)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        private_file(tmp_path / "link.db")
    assert _mode(target) == 0o644

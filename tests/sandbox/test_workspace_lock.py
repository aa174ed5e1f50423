"""A run's workspace between processes: calls take turns on it, and recovery never takes
what a live call or another run has beside it.

Two processes sharing a state directory (``stockade tools call --run-id r`` twice at
once, or the server and the CLI) each had only their own asyncio lock: both calls
sent the same tree and the later swap lost the earlier call's changes, and a process
opening the workspace removed the other's staged tree mid-apply. Another process is
played here by a second open file description of the lock file (``flock`` locks
belong to it, so it conflicts even within one process).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.sandbox.workspace import WorkspaceManager


@contextmanager
def held_by_another_process(root: Path, run_id: str) -> Iterator[None]:
    descriptor = os.open(root / f".{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


async def test_a_call_waits_for_a_workspace_another_process_holds(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("r1")
    entered = asyncio.Event()

    async def call() -> None:
        async with workspace.lock:
            entered.set()

    with held_by_another_process(tmp_path, "r1"):
        task = asyncio.create_task(call())
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)  # the loop goes on meanwhile: it is not blocked
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not entered.is_set(), "the call ran while another process held the workspace"
    await asyncio.wait_for(task, 5)
    assert entered.is_set()


async def test_a_call_cancelled_while_waiting_holds_nothing(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("r1")
    with held_by_another_process(tmp_path, "r1"):
        waiting = asyncio.create_task(workspace.lock.__aenter__())
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    async with asyncio.timeout(1):
        async with workspace.lock:  # neither this process's turn nor the file is held
            pass


def test_what_lies_beside_a_workspace_in_use_is_left_to_its_call(tmp_path: Path) -> None:
    WorkspaceManager(tmp_path).open("r1")
    staged = tmp_path / ".r1.new-abcd1234"  # another process's apply, under way
    staged.mkdir()
    with held_by_another_process(tmp_path, "r1"):
        WorkspaceManager(tmp_path).open("r1")
        assert staged.is_dir()
    WorkspaceManager(tmp_path).open("r1")  # nobody holds it: a dead call's leftover
    assert not staged.exists()


def test_recovery_takes_nothing_of_another_run(tmp_path: Path) -> None:
    """Run ids may hold dots: run ``a``'s leftovers are not those of ``a.old-4`` or ``a.new-b``."""
    others = [tmp_path / ".a.old-4.old-99", tmp_path / ".a.new-b.new-abcd1234"]
    for tree in others:
        (tree / "secret.txt").parent.mkdir()
        (tree / "secret.txt").write_text("another run's")
    workspace = WorkspaceManager(tmp_path).open("a")
    assert list(workspace.path.iterdir()) == [], "another run's tree became this workspace"
    assert all(tree.is_dir() for tree in others)

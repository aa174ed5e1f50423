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
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from spawned import BOUND_S, in_processes

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


async def test_a_call_kept_waiting_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``stockade tools call --workspace DIR`` beside another call on DIR: the terminal says
    why nothing happens (the CLI shows warnings), once."""
    monkeypatch.setattr("orchestrator.sandbox.workspace._WAIT_NOTICE_S", 0.1)
    workspace = WorkspaceManager(tmp_path).open("r1")
    with held_by_another_process(tmp_path, "r1"), caplog.at_level(logging.WARNING):
        task = asyncio.create_task(workspace.lock.__aenter__())
        await asyncio.sleep(0.5)
    await asyncio.wait_for(task, 5)
    await workspace.lock.__aexit__(None, None, None)
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        f"the workspace {workspace.path} is in use by another process (another call of its "
        "run); waiting for it"
    ]


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
    """Run ids may hold dots: run ``a``'s leftovers are not those of ``a.new-b`` or ``a.apply``."""
    others = [tmp_path / ".a.new-b.new-abcd1234", tmp_path / ".a.apply.apply"]
    for tree in others:
        (tree / "secret.txt").parent.mkdir()
        (tree / "secret.txt").write_text("another run's")
    workspace = WorkspaceManager(tmp_path).open("a")
    assert list(workspace.path.iterdir()) == [], "another run's tree became this workspace"
    assert all(tree.is_dir() for tree in others)


async def test_the_lock_file_exists_only_while_a_call_holds_it(tmp_path: Path) -> None:
    """Nothing is left beside the workspace: a directory given with ``--workspace`` sits
    among the user's own files."""
    workspace = WorkspaceManager(tmp_path).open("r1")
    assert [path.name for path in tmp_path.iterdir()] == ["r1"]
    async with workspace.lock:
        assert (tmp_path / ".r1.lock").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["r1"]


def _count_in_turns(
    root: Path, calls: int, start: Barrier, results: Queue[tuple[str, int]]
) -> None:
    """One process's calls: each reads the count, waits a little, and writes it plus one."""

    async def calls_in_turns() -> None:
        workspace = WorkspaceManager(root).open("r1")
        counter = workspace.path / "count"
        for _ in range(calls):
            async with workspace.lock:
                seen = int(counter.read_text())
                await asyncio.sleep(0.001)  # another process taking its turn now loses a count
                counter.write_text(str(seen + 1))

    start.wait(timeout=BOUND_S)
    asyncio.run(calls_in_turns())
    results.put(("done", calls))


def test_turns_hold_across_processes_while_lock_files_come_and_go(tmp_path: Path) -> None:
    """A lock won on a file its holder has just removed excludes nobody: the taker must see
    that the file at the path is no longer the one it locked, and try the new one."""
    workspace = WorkspaceManager(tmp_path).open("r1")
    (workspace.path / "count").write_text("0")
    done = in_processes(_count_in_turns, [(tmp_path, 40) for _ in range(4)])
    assert sum(done) == 160
    assert (workspace.path / "count").read_text() == "160"
    assert [path.name for path in tmp_path.iterdir()] == ["r1"]

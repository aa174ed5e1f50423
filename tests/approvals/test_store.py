"""Approval requests: approve, deny, edit, expiry, waiting, restarts, and racing deciders."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def new_request(store: ApprovalStore, timeout_s: float = 60.0) -> ApprovalRequest:
    request = store.create(
        tool="shell.run", arguments={"command": "rm -rf build"}, reason="destructive",
        timeout_s=timeout_s, rule="shell-destructive", principal="ada", run_id="r1",
    )  # fmt: skip
    assert request.status is ApprovalStatus.PENDING
    return request


def test_create_and_show(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    created = new_request(store, timeout_s=30)
    shown = store.get(created.id)
    assert shown == created
    assert (shown.created_at, shown.expires_at) == (clock.now, clock.now + 30)
    assert (shown.tool, shown.rule, shown.principal, shown.run_id) == (
        "shell.run",
        "shell-destructive",
        "ada",
        "r1",
    )
    assert store.get("nope") is None
    with pytest.raises(ValueError, match="positive"):
        store.create(tool="t", arguments={}, reason="r", timeout_s=0)


def test_approve_deny_and_edit(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    first, second, third = (new_request(store).id for _ in range(3))
    assert [r.id for r in store.find()] == [first, second, third]
    clock.now += 5
    assert store.decide(first, approve=True, by="bob")
    assert store.decide(second, approve=False, by="bob", note="not on a Friday")
    assert store.decide(third, approve=True, by="eve", arguments={"command": "rm -rf build/tmp"})
    approved, denied, edited = (store.get(i) for i in (first, second, third))
    assert approved is not None and approved.status is ApprovalStatus.APPROVED
    assert (approved.decided_by, approved.decided_at) == ("bob", clock.now)
    assert approved.effective_arguments == {"command": "rm -rf build"}
    assert denied is not None and denied.status is ApprovalStatus.DENIED
    assert denied.note == "not on a Friday"
    assert edited is not None and edited.edited_arguments == {"command": "rm -rf build/tmp"}
    assert edited.arguments == {"command": "rm -rf build"}, "the original is kept for the audit"
    assert edited.effective_arguments == {"command": "rm -rf build/tmp"}
    assert not store.decide(first, approve=False, by="mallory"), "a decision is final"
    assert store.get(first) == approved
    assert store.find() == []
    assert [r.id for r in store.find(ApprovalStatus.APPROVED)] == [first, third]
    assert len(store.find(None)) == 3
    assert not store.decide("unknown", approve=True, by="bob")


def test_edited_arguments_only_with_approval(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store)
    with pytest.raises(ValueError, match="only make sense when approving"):
        store.decide(request.id, approve=False, by="bob", arguments={"command": "ls"})
    assert store.get(request.id) == request


def test_expiry(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    request = new_request(store, timeout_s=30)
    clock.now += 29.9
    assert [r.id for r in store.find()] == [request.id]
    clock.now += 0.1
    assert not store.decide(request.id, approve=True, by="late")
    expired = store.get(request.id)
    assert expired is not None and expired.status is ApprovalStatus.EXPIRED
    assert store.find() == [] and [r.id for r in store.find(ApprovalStatus.EXPIRED)] == [request.id]
    assert store.expire() == 1, "written down once"
    assert store.expire() == 0
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT status FROM approvals").fetchone() == ("expired",)


async def test_wait_returns_a_decision_made_by_another_store(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store)
    waiter = asyncio.create_task(store.wait_for_decision(request.id, poll_s=0.01))
    await asyncio.sleep(0)  # the waiter is running and finds the request pending
    other = ApprovalStore(tmp_path / "a.db")
    assert await asyncio.to_thread(other.decide, request.id, approve=True, by="bob")
    async with asyncio.timeout(10):
        decided = await waiter
    assert decided.status is ApprovalStatus.APPROVED and decided.decided_by == "bob"


async def test_wait_ends_at_the_deadline_and_writes_it_down(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store, timeout_s=0.2)
    async with asyncio.timeout(10):
        result = await store.wait_for_decision(request.id, poll_s=0.05)
    assert result.status is ApprovalStatus.EXPIRED
    assert not store.decide(request.id, approve=True, by="too-late")
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT status FROM approvals").fetchone() == ("expired",)


async def test_a_shorter_wait_times_out_and_leaves_the_request_pending(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store, timeout_s=60)
    with pytest.raises(TimeoutError):
        await store.wait_for_decision(request.id, timeout_s=0.05, poll_s=0.01)
    still = store.get(request.id)
    assert still is not None and still.status is ApprovalStatus.PENDING


async def test_wait_for_an_unknown_request(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        await ApprovalStore(tmp_path / "a.db").wait_for_decision("nope")


async def test_restart_while_pending(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    before = ApprovalStore(path)
    request = new_request(before)
    waiting = asyncio.create_task(before.wait_for_decision(request.id, poll_s=0.01))
    await asyncio.sleep(0)
    waiting.cancel()  # the orchestrator goes down mid-wait
    with pytest.raises(asyncio.CancelledError):
        await waiting
    del before

    after = ApprovalStore(path)  # a new process, the same file
    assert [r.id for r in after.find()] == [request.id]
    resumed = asyncio.create_task(after.wait_for_decision(request.id, poll_s=0.01))
    assert ApprovalStore(path).decide(request.id, approve=False, by="bob", note="no")
    async with asyncio.timeout(10):
        decided = await resumed
    assert (decided.status, decided.note) == (ApprovalStatus.DENIED, "no")


def _decide(path: str, request_id: str, approve: bool, barrier: Any, out: Any) -> None:
    store = ApprovalStore(Path(path))
    barrier.wait()
    out.put((approve, store.decide(request_id, approve=approve, by=f"proc-{os.getpid()}")))


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_decide_and_exactly_one_wins(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "a.db"
    request_id = new_request(ApprovalStore(path)).id
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    deciders = [
        context.Process(target=_decide, args=(str(path), request_id, approve, barrier, out))
        for approve in (True, False)
    ]
    for process in deciders:
        process.start()
    results = [out.get(timeout=60) for _ in deciders]
    for process in deciders:
        process.join(timeout=60)
        assert process.exitcode == 0
    winners = [approve for approve, won in results if won]
    assert len(winners) == 1
    final = ApprovalStore(path).get(request_id)
    assert final is not None
    assert final.status is (ApprovalStatus.APPROVED if winners[0] else ApprovalStatus.DENIED)


def test_many_threads_with_their_own_connections_one_winner_each(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    ids = [new_request(ApprovalStore(path)).id for _ in range(20)]
    wins: list[tuple[str, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def decider(number: int) -> None:
        store = ApprovalStore(path)
        barrier.wait()
        for request_id in ids:
            if store.decide(request_id, approve=number % 2 == 0, by=f"t{number}"):
                with lock:
                    wins.append((request_id, number))

    threads = [threading.Thread(target=decider, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(request_id for request_id, _ in wins) == sorted(ids)
    store = ApprovalStore(path)
    for request_id, number in wins:
        final = store.get(request_id)
        assert final is not None and final.decided_by == f"t{number}"


def test_a_database_from_before_notes_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, tool TEXT NOT NULL, arguments TEXT NOT"
            " NULL, rule TEXT, reason TEXT NOT NULL, principal TEXT, run_id TEXT, status TEXT NOT"
            " NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, decided_by TEXT,"
            " decided_at REAL, edited_arguments TEXT)"
        )
    store = ApprovalStore(path)
    request = new_request(store)
    assert store.decide(request.id, approve=False, by="bob", note="fine")


def test_cli(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    request_id = new_request(ApprovalStore(db)).id

    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "approvals", *args, "--db", str(db)],
            capture_output=True,
            text=True,
            check=False,
        )

    assert request_id in stockade("list").stdout
    assert '"tool": "shell.run"' in stockade("show", request_id).stdout
    approved = stockade("approve", request_id, "--args", '{"command": "ls"}', "--note", "ok")
    assert approved.returncode == 0, approved.stderr
    again = stockade("deny", request_id)
    assert again.returncode == 1 and "it is approved" in again.stderr
    assert "no requests" in stockade("list").stdout
    final = ApprovalStore(db).get(request_id)
    assert final is not None and (final.edited_arguments, final.note) == ({"command": "ls"}, "ok")

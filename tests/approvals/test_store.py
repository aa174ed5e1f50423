"""Approval requests: approve, deny, edit, timeout, restart, and racing deciders."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.approvals import ApprovalStatus, ApprovalStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def new_request(store: ApprovalStore, timeout_s: float = 60.0) -> str:
    request = store.create(
        tool="shell.run", arguments={"command": "rm -rf build"}, reason="destructive",
        timeout_s=timeout_s, rule="shell-destructive", principal="ada", run_id="r1",
    )  # fmt: skip
    assert request.status is ApprovalStatus.PENDING
    return request.id


def test_approve_deny_and_edit(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    first, second, third = (new_request(store) for _ in range(3))
    assert [r.id for r in store.find()] == [first, second, third]
    assert store.decide(first, approve=True, by="bob")
    assert store.decide(second, approve=False, by="bob")
    assert store.decide(third, approve=True, by="eve", arguments={"command": "rm -rf build/tmp"})
    approved, denied, edited = (store.get(i) for i in (first, second, third))
    assert approved is not None and approved.status is ApprovalStatus.APPROVED
    assert approved.decided_by == "bob" and approved.decided_at is not None
    assert denied is not None and denied.status is ApprovalStatus.DENIED
    assert edited is not None and edited.edited_arguments == {"command": "rm -rf build/tmp"}
    assert edited.arguments == {"command": "rm -rf build"}, "the original is kept for the audit"
    assert not store.decide(first, approve=False, by="mallory"), "a decision is final"
    assert store.find() == []


def test_timeout_expires_and_cannot_be_decided(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    request_id = new_request(store, timeout_s=30)
    clock.now += 30
    assert not store.decide(request_id, approve=True, by="late")
    expired = store.get(request_id)
    assert expired is not None and expired.status is ApprovalStatus.EXPIRED


async def test_wait_returns_the_decision_made_elsewhere(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request_id = new_request(store)

    async def approver() -> None:
        await asyncio.sleep(0.1)
        assert ApprovalStore(tmp_path / "a.db").decide(request_id, approve=True, by="bob")

    decided, _ = await asyncio.gather(store.wait(request_id, poll_s=0.02), approver())
    assert decided.status is ApprovalStatus.APPROVED


async def test_wait_ends_at_expiry(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request_id = new_request(store, timeout_s=0.2)
    async with asyncio.timeout(5):
        result = await store.wait(request_id, poll_s=0.05)
    assert result.status is ApprovalStatus.EXPIRED


def test_pending_request_survives_a_restart(tmp_path: Path) -> None:
    request_id = new_request(ApprovalStore(tmp_path / "a.db"))
    reopened = ApprovalStore(tmp_path / "a.db")
    assert [r.id for r in reopened.find()] == [request_id]
    assert reopened.decide(request_id, approve=True, by="bob")


def _decide(
    path: str,
    request_id: str,
    approve: bool,
    barrier: Any,
    out: Any,
) -> None:
    store = ApprovalStore(Path(path))
    barrier.wait()
    out.put((approve, store.decide(request_id, approve=approve, by=f"proc-{os.getpid()}")))


@pytest.mark.parametrize("attempt", range(5))
def test_two_deciders_exactly_one_wins(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "a.db"
    request_id = new_request(ApprovalStore(path))
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    deciders = [
        context.Process(target=_decide, args=(str(path), request_id, approve, barrier, out))
        for approve in (True, False)
    ]
    for process in deciders:
        process.start()
    results = [out.get(timeout=30) for _ in deciders]
    for process in deciders:
        process.join()
    winners = [approve for approve, won in results if won]
    assert len(winners) == 1
    final = ApprovalStore(path).get(request_id)
    assert final is not None
    assert final.status is (ApprovalStatus.APPROVED if winners[0] else ApprovalStatus.DENIED)


def test_cli(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    request_id = new_request(ApprovalStore(db))

    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "approvals", *args, "--db", str(db)],
            capture_output=True,
            text=True,
            check=False,
        )

    assert request_id in stockade("list").stdout
    assert '"tool": "shell.run"' in stockade("show", request_id).stdout
    approved = stockade("approve", request_id, "--args", '{"command": "ls"}')
    assert approved.returncode == 0, approved.stderr
    again = stockade("deny", request_id)
    assert again.returncode == 1 and "it is approved" in again.stderr
    assert "no requests" in stockade("list").stdout

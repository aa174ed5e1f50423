"""Approval requests: approve, deny, edit, expiry, waiting, restarts, racing deciders,
single-use consumption and grants for the rest of a run."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator.approvals import ApprovalRequest, ApprovalScope, ApprovalStatus, ApprovalStore
from orchestrator.cli.approvals import approvals
from orchestrator.errors import NotFoundError, UsageError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


RM = {"command": "rm -rf build"}


def new_request(
    store: ApprovalStore,
    timeout_s: float = 60.0,
    *,
    call_id: str | None = None,
    arguments: dict[str, Any] = RM,
    run_id: str | None = "r1",
) -> ApprovalRequest:
    request = store.create(
        tool="shell.run", arguments=arguments, reason="destructive", timeout_s=timeout_s,
        rule="shell-destructive", principal="ada", run_id=run_id, call_id=call_id,
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
    with pytest.raises(UsageError, match="positive"):
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
    with pytest.raises(UsageError, match="only make sense when approving"):
        store.decide(request.id, approve=False, by="bob", arguments={"command": "ls"})
    assert store.get(request.id) == request


@pytest.mark.parametrize(
    ("edited", "problem"),
    [
        ([1, 2], "must be a JSON object of argument names and values, got [1, 2]"),
        ("ls", 'must be a JSON object of argument names and values, got "ls"'),
        ({"n": float("nan")}, "are not JSON: Out of range float values"),
    ],
)
def test_edited_arguments_that_are_no_json_object_are_refused(
    tmp_path: Path, edited: Any, problem: str
) -> None:
    """Stored, a list made every later read of the database fail (``approvals list``, the
    gateway waiting for the decision); NaN made the call's audit record unwritable."""
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store)
    with pytest.raises(UsageError, match=re.escape(problem)):
        store.decide(request.id, approve=True, by="bob", arguments=edited)
    assert store.find() == [request]
    result = CliRunner().invoke(
        approvals, ["approve", request.id, "--args", "[1, 2]", "--db", str(tmp_path / "a.db")]
    )
    assert result.exit_code == 2 and "must be a JSON object" in result.output
    assert store.find() == [request]


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


def test_listing_by_status_finds_its_rows_through_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter was on the status computed for each row, so every list (the approval
    page asks for the pending ones each second) read every request ever made: ~60 ms
    for 200 000. Counted in SQLite's steps, a list now costs what it finds, not the table."""
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    pending, lapsing = new_request(store, timeout_s=60), new_request(store, timeout_s=5)
    rows = [(f"old-{i}", "t", "{}", "r", "approved", i, i + 1, "once") for i in range(20_000)]
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.executemany(
            "INSERT INTO approvals (id, tool, arguments, reason, status, created_at,"
            " expires_at, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    clock.now += 10  # lapsing is past its deadline, not yet written down as expired
    steps: list[int] = []
    connect = sqlite3.connect

    def counted(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = connect(*args, **kwargs)
        steps.append(0)
        db.set_progress_handler(lambda: steps.__setitem__(-1, steps[-1] + 1), 1000)
        return db

    monkeypatch.setattr(sqlite3, "connect", counted)
    found = {
        status: [r.id for r in store.find(status)]
        for status in (ApprovalStatus.PENDING, ApprovalStatus.EXPIRED, ApprovalStatus.DENIED)
    }
    assert found == {
        ApprovalStatus.PENDING: [pending.id],
        ApprovalStatus.EXPIRED: [lapsing.id],
        ApprovalStatus.DENIED: [],
    }
    assert max(steps) < 10, steps  # thousands of SQLite steps; scanning 20 000 rows: ~300
    monkeypatch.undo()
    assert len(store.find(ApprovalStatus.APPROVED)) == 20_000
    assert len(store.find(None)) == 20_002


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
    with pytest.raises(NotFoundError):
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


# --- single use ---------------------------------------------------------------------------


def find_call(store: ApprovalStore, call_id: str = "c1") -> ApprovalRequest | None:
    return store.find_for_call(run_id="r1", call_id=call_id, tool="shell.run", arguments=RM)


def test_a_decision_is_consumed_by_exactly_one_execution(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    request = new_request(store, call_id="c1")
    assert store.consume(request.id, call_id="c1") is None, "a pending request authorises nothing"
    assert find_call(store) == request, "found again while pending: a replay waits on it"
    assert store.decide(request.id, approve=True, by="bob")
    assert find_call(store) is not None, "decided, unconsumed: a replay after a restart uses it"
    clock.now += 3
    consumed = store.consume(request.id, call_id="c1")
    assert consumed is not None and consumed.status is ApprovalStatus.APPROVED
    assert (consumed.consumed_by, consumed.consumed_at) == ("c1", clock.now)
    assert consumed.scope is ApprovalScope.ONCE and not consumed.is_grant
    assert store.get(request.id) == consumed
    # Never again, not even for an identical call reusing the same id.
    assert store.consume(request.id, call_id="c1") is None
    assert store.consume(request.id, call_id="c2") is None
    assert find_call(store) is None
    assert store.get(request.id) == consumed, "the first consumer stays recorded"
    assert store.consume("unknown", call_id="c1") is None


def test_an_identical_later_request_is_a_new_one(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    first = new_request(store, call_id="c1")
    assert store.decide(first.id, approve=True, by="bob")
    assert store.consume(first.id, call_id="c1") is not None
    again = new_request(store, call_id="c1")  # the same (run, call id, tool, arguments)
    assert find_call(store) == again
    assert store.consume(again.id, call_id="c1") is None, "it needs its own decision"


def test_denials_and_expiries_are_consumed_too(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    denied = new_request(store, call_id="c1")
    assert store.decide(denied.id, approve=False, by="bob", note="no")
    refused = store.consume(denied.id, call_id="c1")
    assert refused is not None and refused.status is ApprovalStatus.DENIED
    assert find_call(store) is None, "the refusal was delivered: an identical call asks again"

    late = new_request(store, timeout_s=10, call_id="c2")
    clock.now += 10  # past its deadline, not yet written down as expired
    expired = store.consume(late.id, call_id="c2")
    assert expired is not None and expired.status is ApprovalStatus.EXPIRED
    assert expired.consumed_by == "c2"
    with sqlite3.connect(tmp_path / "a.db") as db:
        row = db.execute("SELECT status FROM approvals WHERE id = ?", (late.id,)).fetchone()
    assert row == ("expired",)


def _consume(path: str, request_id: str, call_id: str, barrier: Any, out: Any) -> None:
    store = ApprovalStore(Path(path))
    barrier.wait()
    out.put((call_id, store.consume(request_id, call_id=call_id) is not None))


@pytest.mark.parametrize("attempt", range(3))
def test_processes_racing_to_consume_one_decision_exactly_one_wins(
    tmp_path: Path, attempt: int
) -> None:
    path = tmp_path / "a.db"
    store = ApprovalStore(path)
    request = new_request(store, call_id="c1")
    assert store.decide(request.id, approve=True, by="bob")
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(3), context.Queue()
    consumers = [
        context.Process(target=_consume, args=(str(path), request.id, f"p{n}", barrier, out))
        for n in range(3)
    ]
    try:
        for process in consumers:
            process.start()
        results = dict(out.get(timeout=60) for _ in consumers)
        for process in consumers:
            process.join(timeout=60)
            assert process.exitcode == 0
    finally:
        for process in consumers:
            if process.is_alive():
                process.kill()
    winners = [call_id for call_id, won in results.items() if won]
    assert len(winners) == 1
    final = store.get(request.id)
    assert final is not None and final.consumed_by == winners[0]


def test_a_database_from_before_single_use_consumes_its_old_decisions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, tool TEXT NOT NULL, arguments TEXT NOT"
            " NULL, rule TEXT, reason TEXT NOT NULL, principal TEXT, run_id TEXT, status TEXT NOT"
            " NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, decided_by TEXT,"
            " decided_at REAL, edited_arguments TEXT, note TEXT, call_id TEXT)"
        )
        rows = [("old", "approved", 5.0), ("waiting", "pending", None)]
        for request_id, status, decided_at in rows:
            db.execute(
                "INSERT INTO approvals VALUES (?, 'shell.run', ?, NULL, 'r', NULL, 'r1', ?, 1.0,"
                " 9e9, 'bob', ?, NULL, NULL, 'c1')",
                (request_id, json.dumps(RM), status, decided_at),
            )
    store = ApprovalStore(path)
    old = store.get("old")
    assert old is not None and old.consumed_at == 5.0, "it may have authorised a call already"
    assert store.consume("old", call_id="c1") is None
    assert find_call(store) == store.get("waiting")
    assert store.decide("waiting", approve=True, by="bob")
    assert store.consume("waiting", call_id="c1") is not None
    ApprovalStore(path)  # opening an up-to-date database changes nothing
    assert store.get("waiting") is not None


# --- grants for the rest of a run -------------------------------------------------------


def grant_for(
    store: ApprovalStore,
    arguments: dict[str, Any] = RM,
    *,
    run_id: str = "r1",
    tool: str = "shell.run",
    rule: str | None = "shell-destructive",
    principal: str | None = "ada",
) -> ApprovalRequest | None:
    return store.find_grant(
        run_id=run_id, tool=tool, rule=rule, principal=principal, arguments=arguments
    )


def test_a_grant_for_the_run_covers_the_same_tool_and_rule_in_that_run_only(
    tmp_path: Path,
) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store, call_id="c1")
    assert grant_for(store) is None, "no grant without the approver's explicit choice"
    assert store.decide(request.id, approve=True, by="bob", scope=ApprovalScope.RUN)
    granted = store.get(request.id)
    assert granted is not None and granted.is_grant and granted.scope is ApprovalScope.RUN
    assert grant_for(store) == granted
    assert grant_for(store, {"command": "rm -rf dist"}) == granted, "any arguments"
    assert grant_for(store, run_id="r2") is None
    assert grant_for(store, tool="files.delete") is None
    assert grant_for(store, rule="other-rule") is None
    assert grant_for(store, principal="mallory") is None
    for call_id in ("c1", "c2", "c3"):  # used by many calls, consumed by none
        assert store.consume(request.id, call_id=call_id) == granted
    assert find_call(store) is None, "a grant is found as a grant, not as a call's request"


def test_a_grant_for_identical_calls(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store, call_id="c1")
    assert store.decide(request.id, approve=True, by="bob", scope=ApprovalScope.RUN_IDENTICAL)
    granted = store.get(request.id)
    assert grant_for(store) == granted
    assert grant_for(store, {"command": "rm -rf dist"}) is None
    assert grant_for(store, run_id="r2") is None


def test_only_an_approval_of_a_run_can_be_a_grant(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    request = new_request(store)
    with pytest.raises(UsageError, match="only an approval"):
        store.decide(request.id, approve=False, by="bob", scope=ApprovalScope.RUN)
    with pytest.raises(UsageError, match="cannot edit"):
        store.decide(
            request.id, approve=True, by="bob", arguments={"command": "ls"},
            scope=ApprovalScope.RUN_IDENTICAL,
        )  # fmt: skip
    runless = new_request(store, run_id=None)
    with pytest.raises(UsageError, match="belongs to no run"):
        store.decide(runless.id, approve=True, by="bob", scope=ApprovalScope.RUN)
    assert store.find() == [request, runless], "nothing was decided"
    assert store.decide(runless.id, approve=True, by="bob")
    assert not store.decide(runless.id, approve=True, by="bob", scope=ApprovalScope.RUN)


def test_cli_scope_and_consumption(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = ApprovalStore(db)
    once, grant = new_request(store, call_id="c1"), new_request(store, call_id="c2")

    def stockade(*args: str) -> Result:
        return CliRunner().invoke(approvals, [*args, "--db", str(db)])

    assert stockade("approve", once.id).stdout.strip() == f"{once.id}: approved"
    granted = stockade("approve", grant.id, "--scope", "run")
    assert granted.exit_code == 0, granted.output
    assert granted.stdout.strip() == f"{grant.id}: approved for the rest of run r1 (run)"
    assert store.consume(once.id, call_id="c1") is not None
    listed = stockade("list", "--all").stdout
    assert f"{once.id}  approved" in listed and "used by call c1" in listed
    assert "granted for the run (run)" in listed
    shown = json.loads(stockade("show", grant.id).stdout)
    assert (shown["scope"], shown["consumed_by"]) == ("run", None)
    bad = stockade("approve", once.id, "--scope", "forever")
    assert bad.exit_code == 2 and "forever" in bad.stderr
    runless = new_request(store, run_id=None)
    refused = stockade("approve", runless.id, "--scope", "run-identical")
    assert refused.exit_code == 2 and "belongs to no run" in refused.stderr


def test_a_limited_list_is_the_newest_requests_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path / "a.db", clock=clock)
    made = []
    for _ in range(5):
        made.append(new_request(store).id)
        clock.now += 1
    newest, more = store.newest(ApprovalStatus.PENDING, 2)
    assert ([r.id for r in newest], more) == (made[3:], True)
    everything, more = store.newest(None, 10)
    assert ([r.id for r in everything], more) == (made, False)
    assert [r.id for r in store.find()] == made


def test_the_cli_lists_the_newest_and_says_when_it_left_some_out(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    made = [new_request(store).id for _ in range(3)]
    shown = CliRunner().invoke(approvals, ["list", "--db", str(tmp_path / "a.db"), "--limit", "2"])
    assert shown.exit_code == 0, shown.output
    assert [line.split()[0] for line in shown.stdout.splitlines()[1:]] == made[1:]
    assert shown.stderr == "older requests not shown: raise --limit (now 2)\n"

"""The SQLite limit store: shared through its file, never waiting when asked not to, failing loudly."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.policy import InMemoryLimitStore, RateCell, SqliteLimitStore
from orchestrator.policy import _sqlite_limits as sqlite_limits

CELL = RateCell(key="k", interval_s=10.0, tolerance_s=10.0)  # burst 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process's view: a connection of its own holding the write lock."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")


def test_stores_on_one_file_share_everything(tmp_path: Path) -> None:
    clock = Clock()
    first = SqliteLimitStore(tmp_path / "limits.db", clock=clock)
    second = SqliteLimitStore(tmp_path / "limits.db", clock=clock)
    assert first.acquire([CELL]).allowed and second.acquire([CELL]).allowed
    refused = first.acquire([CELL])
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10.0)
    first.count_call("run", max_calls=None, max_tokens=None)
    second.add_tokens("run", 7)
    first.close()
    reopened = SqliteLimitStore(tmp_path / "limits.db", clock=clock)
    assert not reopened.acquire([CELL]).allowed, "the state outlives the process that wrote it"
    assert reopened.usage("run").calls == 1 and reopened.usage("run").tokens == 7
    second.close()
    reopened.close()


def test_try_acquire_declines_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    store = SqliteLimitStore(path, clock=Clock(), busy_timeout_s=0.05)
    with write_lock_held(path):
        assert store.try_acquire([CELL]) is None
        with pytest.raises(InfrastructureError) as raised:
            store.acquire([CELL])
    assert (raised.value.code, raised.value.op, raised.value.retryable) == (
        ErrorCode.TIMEOUT,
        "limits.acquire",
        True,
    )
    verdict = store.try_acquire([CELL])
    assert verdict is not None and verdict.allowed, "declining charged nothing"
    assert store.acquire([CELL]).allowed and not store.acquire([CELL]).allowed
    store.close()


def test_housekeeping_happens_off_the_non_waiting_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_limits, "_HOUSEKEEPING_EVERY", 3)
    clock = Clock()
    store = SqliteLimitStore(tmp_path / "limits.db", clock=clock)
    cells = [RateCell(key=f"k{n}", interval_s=1.0, tolerance_s=0.0) for n in range(3)]
    for cell in cells:
        assert store.try_acquire([cell]) is not None
    clock.now += 5  # every state is idle now
    assert store.try_acquire([CELL]) is None, "a checkpoint is due: left to a thread"
    assert store.acquire([CELL]).allowed
    assert store.tracked_keys() == 1, "idle states were pruned"
    assert store.try_acquire([CELL]) is not None
    store.close()


def _use_inherited(store: SqliteLimitStore) -> None:
    ok = store.acquire([CELL]).allowed and store.count_call("r", max_calls=1, max_tokens=None)[0]
    raise SystemExit(0 if ok else 1)


def test_a_forked_process_opens_its_own_connection(tmp_path: Path) -> None:
    store = SqliteLimitStore(tmp_path / "limits.db", clock=Clock())
    assert store.acquire([CELL]).allowed
    child = multiprocessing.get_context("fork").Process(target=_use_inherited, args=(store,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert not store.acquire([CELL]).allowed, "the child's call counted"
    assert not store.count_call("r", max_calls=1, max_tokens=None)[0]
    store.close()


def test_an_unusable_path_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InfrastructureError) as raised:
        SqliteLimitStore(tmp_path / "file" / "limits.db")
    assert raised.value.op == "limits.open" and not raised.value.retryable


def test_a_closed_store_raises_a_platform_error(tmp_path: Path) -> None:
    store = SqliteLimitStore(tmp_path / "limits.db")
    store.close()
    with pytest.raises(InfrastructureError) as raised:
        store.usage("r")
    assert raised.value.code is ErrorCode.CLOSED and raised.value.op == "limits.usage"


def test_the_default_clock_is_the_wall_clock(tmp_path: Path) -> None:
    store = SqliteLimitStore(tmp_path / "limits.db")
    assert store.acquire([CELL]).allowed and store.acquire([CELL]).allowed
    refused = store.acquire([CELL])
    assert not refused.allowed and 9.0 < refused.retry_after_s <= 10.0
    with closing(sqlite3.connect(tmp_path / "limits.db")) as db:
        ((tat,),) = db.execute("SELECT tat FROM rate_states").fetchall()
    assert tat > 1.7e9, "Unix time, meaningful to every process and after a reboot"
    store.close()


def test_only_the_shared_store_says_it_may_wait(tmp_path: Path) -> None:
    store = SqliteLimitStore(tmp_path / "limits.db")
    assert store.may_wait and not InMemoryLimitStore().may_wait
    store.close()

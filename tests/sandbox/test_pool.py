"""Warm pool logic, with plain fakes for the sandboxes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox.pool import WarmPool


class FakeSandboxes:
    def __init__(self) -> None:
        self.ids = itertools.count()
        self.live: set[int] = set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = 0
        self.waited_for: list[bool] = []

    async def launch(self, waited_for: bool) -> int:
        self.waited_for.append(waited_for)
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise InfrastructureError(
                "engine hiccup", code=ErrorCode.ENGINE_ERROR, op="t", retryable=True
            )
        item = next(self.ids)
        self.live.add(item)
        return item

    async def destroy(self, item: int) -> None:
        self.live.discard(item)


async def test_acquire_takes_ready_ones_and_refills() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=2)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    first, warm = await pool.acquire()
    assert warm
    await pool.wait_ready(timeout_s=5)
    second, warm = await pool.acquire()
    assert warm and second != first, "never the same sandbox twice"
    await pool.close()
    assert fake.live == {first, second}, "the pool destroyed what it held, not what it gave out"


async def test_empty_pool_falls_back_to_a_fresh_sandbox() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=0)
    pool.start()
    item, warm = await pool.acquire()
    assert not warm
    assert item in fake.live
    await pool.close()


async def test_acquire_does_not_wait_for_starts_when_one_is_ready() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    fake.gate.clear()  # every further start now hangs
    async with asyncio.timeout(1):
        _, warm = await pool.acquire()
    assert warm
    fake.gate.set()
    await pool.close()


async def test_failed_starts_back_off_and_recover() -> None:
    fake = FakeSandboxes()
    fake.fail = 2
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    pool.start()
    await pool.wait_ready(timeout_s=10)
    assert pool.ready == 1
    await pool.close()
    assert fake.live == set()


async def test_idle_sandboxes_are_recycled() -> None:
    now = [0.0]
    fake = FakeSandboxes()
    pool = WarmPool(
        name="t",
        launch=fake.launch,
        destroy=fake.destroy,
        size=1,
        max_idle_s=10,
        clock=lambda: now[0],
    )
    pool.start()
    await pool.wait_ready(timeout_s=5)
    (old,) = fake.live
    now[0] = 11.0
    item, _ = await pool.acquire()
    assert item != old, "an expired sandbox is never handed out"
    await pool.close()
    assert old not in fake.live, "the expired sandbox was destroyed"


async def test_closed_pool_refuses() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    pool.start()
    await pool.close()
    with pytest.raises(InfrastructureError, match="closed"):
        await pool.acquire()


async def test_empty_pool_hands_over_a_start_already_under_way() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    fake.gate.clear()
    pool.start()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)  # let the refiller begin its start and the caller queue up
    await asyncio.sleep(0)
    assert pool.starting == 2, "one start for the pool, one for the waiting caller"
    fake.gate.set()
    item, warm = await asyncio.wait_for(waiting, 5)
    assert warm, "the in-flight start was handed over"
    assert item in fake.live
    await pool.close()


async def test_failed_handover_falls_back_to_a_fresh_start() -> None:
    fake = FakeSandboxes()
    fake.fail = 1
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    fake.gate.clear()
    pool.start()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    fake.gate.set()
    item, warm = await asyncio.wait_for(waiting, 5)
    assert not warm
    assert item in fake.live
    await pool.close()


async def _settle() -> None:
    """Let every task the pool woke run until it waits again (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_deferred_refill_waits_for_the_call_while_a_spare_is_ready() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=2, refill_delay_s=60.0)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    await _settle()  # the refiller has seen the pool full
    launched = len(fake.live)
    _, warm = await pool.acquire(defer_refill=True)
    await _settle()
    assert warm and pool.ready == 1, "the spare is still there for the next call"
    assert pool.starting == 0 and len(fake.live) == launched, "no start during the call"
    pool.refill()  # the call is over
    await pool.wait_ready(timeout_s=5)
    assert len(fake.live) == launched + 1
    await pool.close()


async def test_deferred_refill_starts_at_once_when_the_pool_is_taken_empty() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=2, refill_delay_s=60.0)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    await pool.acquire(defer_refill=True)
    await pool.acquire(defer_refill=True)  # no spare left: this one does not wait
    await pool.wait_ready(timeout_s=5)  # both replaced, though no call said it was over
    assert pool.ready == 2
    await pool.close()


async def test_deferred_refill_starts_after_the_delay_if_the_call_goes_on() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=2, refill_delay_s=0.05)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    await pool.acquire(defer_refill=True)
    # wait_ready wakes the refiller itself: watch the count instead, bounded.
    async with asyncio.timeout(5):
        while pool.ready < 2:
            await asyncio.sleep(0.01)
    await pool.close()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_start_a_caller_waits_for_is_marked_so_and_refills_are_not() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=1)
    pool.start()
    await pool.wait_ready(timeout_s=5)
    assert fake.waited_for == [False], "filling the pool: nobody waits"
    fake.gate.clear()  # the next starts hang until the gate opens
    await pool.acquire()  # the ready one; its replacement starts, nobody waiting
    await until(lambda: len(fake.waited_for) == 2)
    assert fake.waited_for == [False, False] and pool.starting == 1
    waiting = asyncio.ensure_future(pool.acquire())  # waits for the start under way
    await until(lambda: len(fake.waited_for) == 3)
    assert fake.waited_for == [False, False, True], "a start made while a caller waits"
    fake.gate.set()
    assert (await waiting)[1], "handed over from the pool"
    await pool.wait_ready(timeout_s=5)
    await pool.close()


async def test_a_caller_launching_its_own_sandbox_is_waiting_for_it() -> None:
    fake = FakeSandboxes()
    pool = WarmPool(name="t", launch=fake.launch, destroy=fake.destroy, size=0)
    pool.start()
    _, warm = await pool.acquire()
    assert not warm and fake.waited_for == [True]
    await pool.close()

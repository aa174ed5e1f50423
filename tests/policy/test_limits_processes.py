"""Limits shared by processes: N processes hammer one SQLite store; exactly the limit gets through."""

from __future__ import annotations

import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from spawned import BOUND_S, in_processes

from orchestrator.policy import (
    ModelBudget,
    ModelLimits,
    RateLimiter,
    SqliteLimitStore,
    parse_policy,
)

PROCESSES = 4


def frozen_clock() -> float:
    """Every process reads the same instant: capacity never refills during the test."""
    return 1000.0


def hammer(
    path: str,
    policy: str,
    principal: str,
    attempts: int,
    frozen: bool,
    start: Barrier,
    results: Queue[tuple[str, int]],
) -> None:
    """Call as fast as possible, the way the gateway does; report how many got through."""
    store = SqliteLimitStore(path, clock=frozen_clock if frozen else time.time)
    limiter = RateLimiter(parse_policy(policy).rate_limits, store=store)
    start.wait(timeout=BOUND_S)
    allowed = 0
    for _ in range(attempts):
        answer = limiter.try_check("t.run", run_id="r", principal=principal)
        if answer is None:  # the lock is taken: wait for it, as the gateway does in a thread
            answer = limiter.check("t.run", run_id="r", principal=principal)
        allowed += answer.allowed
    store.close()
    results.put((principal, allowed))


def spend(
    path: str, max_calls: int, attempts: int, start: Barrier, results: Queue[tuple[str, int]]
) -> None:
    """Start model calls of one run, adding 5 tokens for each one allowed."""
    store = SqliteLimitStore(path)
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=max_calls), store=store, run_id="r")
    start.wait(timeout=BOUND_S)
    allowed = 0
    for _ in range(attempts):
        if budget.start_call().allowed:
            allowed += 1
            budget.add_tokens(5)
    store.close()
    results.put(("budget", allowed))


def policy(*limits: str) -> str:
    return "version: 1\nrate_limits:\n" + "".join(f"  - {limit}\n" for limit in limits)


def test_processes_together_get_exactly_the_burst(tmp_path: Path) -> None:
    limits = policy("{name: g, tools: 't.*', scope: global, rate: 1, per_s: 10, burst: 50}")
    path = str(tmp_path / "limits.db")
    answers = in_processes(hammer, [(path, limits, f"p{n}", 200, True) for n in range(PROCESSES)])
    assert sum(answers) == 50


def test_on_the_wall_clock_too(tmp_path: Path) -> None:
    # One call an hour after the burst: nothing refills while the test runs.
    limits = policy("{name: g, tools: 't.*', scope: global, rate: 1, per_s: 3600, burst: 40}")
    path = str(tmp_path / "limits.db")
    answers = in_processes(hammer, [(path, limits, f"p{n}", 30, False) for n in range(PROCESSES)])
    assert sum(answers) == 40


def test_a_call_refused_by_one_limit_takes_nothing_from_another(tmp_path: Path) -> None:
    # Each principal may make 10 calls, everyone together 30. Had a call refused
    # by its principal's limit used the global one, fewer than 30 would pass.
    limits = policy(
        "{name: all, tools: 't.*', scope: global, rate: 1, per_s: 10, burst: 30}",
        "{name: each, tools: 't.*', scope: principal, rate: 1, per_s: 10, burst: 10}",
    )
    path = str(tmp_path / "limits.db")
    answers = in_processes(hammer, [(path, limits, f"p{n}", 200, True) for n in range(PROCESSES)])
    assert sum(answers) == 30
    assert all(allowed <= 10 for allowed in answers)


def test_processes_share_one_runs_model_budget(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    answers = in_processes(spend, [(str(path), 37, 50) for _ in range(PROCESSES)])
    assert sum(answers) == 37
    store = SqliteLimitStore(path)
    assert (store.usage("r").calls, store.usage("r").tokens) == (37, 37 * 5)
    store.close()

"""The model-side budget of one run, in every limit store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.policy import (
    InMemoryLimitStore,
    LimitStore,
    ModelBudget,
    ModelLimits,
    SqliteLimitStore,
)

STORES: dict[str, Callable[[Path], LimitStore]] = {
    "memory": lambda _root: InMemoryLimitStore(),
    "sqlite": lambda root: SqliteLimitStore(root / "limits.db"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LimitStore]:
    """A store of each kind; every store behaves the same."""
    opened = STORES[request.param](tmp_path)
    yield opened
    opened.close()


def test_call_limit(store: LimitStore) -> None:
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=2), store=store, run_id="r")
    assert budget.start_call().allowed and budget.start_call().allowed
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used, refused.maximum) == (
        False,
        "max_model_calls_per_run",
        2,
        2,
    )
    assert budget.calls == 2, "a refused call is not counted"


def test_token_limit_stops_the_next_call(store: LimitStore) -> None:
    budget = ModelBudget(ModelLimits(max_tokens_per_run=1000), store=store, run_id="r")
    assert budget.start_call().remaining_tokens == 1000
    budget.add_tokens(600)
    assert budget.remaining_tokens == 400
    assert budget.start_call().remaining_tokens == 400, "the cap for the call about to be made"
    budget.add_tokens(500)
    assert budget.remaining_tokens == 0
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used) == (False, "max_tokens_per_run", 1100)


def test_no_limits_means_no_limits(store: LimitStore) -> None:
    budget = ModelBudget(ModelLimits(), store=store, run_id="r")
    for _ in range(200):
        assert budget.start_call().allowed
        budget.add_tokens(10_000)
    assert budget.remaining_tokens is None and budget.tokens == 2_000_000


def test_runs_are_isolated_and_a_forgotten_run_starts_afresh(store: LimitStore) -> None:
    limits = ModelLimits(max_model_calls_per_run=1)
    first = ModelBudget(limits, store=store, run_id="a")
    assert first.start_call().allowed and not first.start_call().allowed
    assert ModelBudget(limits, store=store, run_id="b").start_call().allowed
    assert not ModelBudget(limits, store=store, run_id="a").start_call().allowed, "shared"
    store.forget("a")
    assert first.start_call().allowed


def test_a_budget_without_a_store_has_its_own() -> None:
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=1))
    assert budget.start_call().allowed and not budget.start_call().allowed
    assert ModelBudget(ModelLimits(max_model_calls_per_run=1)).start_call().allowed


def test_negative_tokens_are_a_bug() -> None:
    with pytest.raises(UsageError, match="never negative"):
        ModelBudget(ModelLimits()).add_tokens(-1)


def test_parallel_calls_cannot_overshoot(store: LimitStore) -> None:
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=50), store=store, run_id="r")
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            allowed = budget.start_call().allowed
            with lock:
                results.append(allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 50 and budget.calls == 50

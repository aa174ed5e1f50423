"""The model-side budget of one run."""

from __future__ import annotations

import threading

import pytest

from orchestrator.policy import ModelBudget, ModelLimits


def test_call_limit() -> None:
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=2))
    assert budget.start_call().allowed and budget.start_call().allowed
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used, refused.maximum) == (
        False,
        "max_model_calls_per_run",
        2,
        2,
    )
    assert budget.calls == 2, "a refused call is not counted"


def test_token_limit_stops_the_next_call() -> None:
    budget = ModelBudget(ModelLimits(max_tokens_per_run=1000))
    assert budget.start_call().allowed
    budget.add_tokens(600)
    assert budget.remaining_tokens == 400
    assert budget.start_call().allowed
    budget.add_tokens(500)
    assert budget.remaining_tokens == 0
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used) == (False, "max_tokens_per_run", 1100)


def test_no_limits_means_no_limits() -> None:
    budget = ModelBudget(ModelLimits())
    for _ in range(1000):
        assert budget.start_call().allowed
        budget.add_tokens(10_000)
    assert budget.remaining_tokens is None and budget.tokens == 10_000_000


def test_negative_tokens_are_a_bug() -> None:
    with pytest.raises(ValueError, match="never negative"):
        ModelBudget(ModelLimits()).add_tokens(-1)


def test_parallel_calls_cannot_overshoot() -> None:
    budget = ModelBudget(ModelLimits(max_model_calls_per_run=50))
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

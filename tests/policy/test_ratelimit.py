"""Rate limits, exact with an injected clock."""

from __future__ import annotations

import pytest

from orchestrator.policy import RateLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(*limits: RateLimit) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(list(limits), clock=clock), clock


def test_burst_then_refill() -> None:
    limits, clock = limiter(
        RateLimit(name="l", tools=["python.*"], scope="run", rate=1, per_s=10, burst=3)
    )
    assert all(limits.check("python.run", run_id="r").allowed for _ in range(3))
    refused = limits.check("python.run", run_id="r")
    assert not refused.allowed and refused.limit == "l"
    assert refused.retry_after_s == pytest.approx(10.0)
    clock.now += 9.999
    assert not limits.check("python.run", run_id="r").allowed
    clock.now += 0.001
    assert limits.check("python.run", run_id="r").allowed
    assert not limits.check("python.run", run_id="r").allowed


def test_scopes_are_isolated() -> None:
    limits, _ = limiter(
        RateLimit(name="run", tools=["*"], scope="run", rate=1, per_s=60),
        RateLimit(name="who", tools=["*"], scope="principal", rate=2, per_s=60, burst=2),
    )
    assert limits.check("x", run_id="a", principal="p").allowed
    assert limits.check("x", run_id="b", principal="p").allowed, "another run has its own budget"
    third = limits.check("x", run_id="c", principal="p")
    assert not third.allowed and third.limit == "who", "the principal's budget is shared"
    assert limits.check("x", run_id="c", principal="q").allowed


def test_global_scope_and_unmatched_tools() -> None:
    limits, _ = limiter(RateLimit(name="g", tools=["http.*"], scope="global", rate=1, per_s=60))
    assert limits.check("http.fetch", run_id="a").allowed
    assert not limits.check("http.fetch", run_id="b").allowed
    assert limits.check("files.read", run_id="b").allowed, "other tools are not counted"


def test_no_partial_consumption() -> None:
    limits, clock = limiter(
        RateLimit(name="loose", tools=["*"], scope="run", rate=10, per_s=10, burst=10),
        RateLimit(name="tight", tools=["shell.*"], scope="run", rate=1, per_s=10),
    )
    assert limits.check("shell.run", run_id="r").allowed
    for _ in range(5):
        refused = limits.check("shell.run", run_id="r")
        assert not refused.allowed and refused.limit == "tight"
    # The refused calls took nothing from the loose limit: 9 more fit in its burst.
    assert all(limits.check("files.read", run_id="r").allowed for _ in range(9))
    assert not limits.check("files.read", run_id="r").allowed
    clock.now += 10
    assert limits.check("shell.run", run_id="r").allowed

"""Rate limits, exact with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.policy import RateLimit, RateLimiter, parse_policy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(*limits: RateLimit) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(list(limits), clock=clock), clock


def limit(name: str = "l", **fields: object) -> RateLimit:
    values: dict[str, object] = {"tools": "*", "scope": "run", "rate": 1, "per_s": 10}
    values.update(fields)
    return RateLimit(name=name, **values)  # type: ignore[arg-type]


def test_burst_then_refill_at_the_exact_interval() -> None:
    limits, clock = limiter(limit(tools="python.*", burst=3))
    assert [limits.check("python.run", run_id="r").allowed for _ in range(3)] == [True] * 3
    refused = limits.check("python.run", run_id="r")
    assert (refused.allowed, refused.limit) == (False, "l")
    assert refused.retry_after_s == pytest.approx(10.0)
    clock.now += 9.999
    almost = limits.check("python.run", run_id="r")
    assert not almost.allowed and almost.retry_after_s == pytest.approx(0.001)
    clock.now += 0.001
    assert limits.check("python.run", run_id="r").allowed
    assert not limits.check("python.run", run_id="r").allowed, "one interval refills one call"


def test_a_long_pause_refills_no_more_than_the_burst() -> None:
    limits, clock = limiter(limit(rate=6, per_s=60, burst=2))
    clock.now += 3600
    assert [limits.check("t", run_id="r").allowed for _ in range(3)] == [True, True, False]


def test_sustained_rate_matches_the_configuration() -> None:
    limits, clock = limiter(limit(rate=30, per_s=60, burst=1))  # one call every 2 s
    allowed = 0
    for _ in range(600):  # 60 seconds in 0.1 s steps
        allowed += limits.check("t", run_id="r").allowed
        clock.now += 0.1
    assert allowed == 30


@pytest.mark.parametrize(
    ("scope", "calls", "expected"),
    [
        # (run_id, principal) pairs against a 1-call budget per scope key
        ("run", [("a", "p"), ("b", "p"), ("a", "q")], [True, True, False]),
        ("principal", [("a", "p"), ("b", "p"), ("a", "q")], [True, False, True]),
        ("global", [("a", "p"), ("b", "q")], [True, False]),
    ],
)
def test_scopes_are_isolated(
    scope: str, calls: list[tuple[str, str]], expected: list[bool]
) -> None:
    limits, _ = limiter(limit(scope=scope))
    answers = [limits.check("t", run_id=run, principal=who).allowed for run, who in calls]
    assert answers == expected


def test_limits_are_isolated_from_each_other_and_from_unmatched_tools() -> None:
    limits, _ = limiter(
        limit("http", tools="http.*", scope="global"), limit("py", tools="python.*")
    )
    assert limits.check("http.fetch", run_id="a").allowed
    assert limits.check("python.run", run_id="a").allowed, "another limit's budget"
    assert not limits.check("http.fetch", run_id="b").allowed
    assert limits.check("files.read", run_id="b").allowed, "counted by no limit"


def test_no_partial_consumption() -> None:
    limits, clock = limiter(
        limit("loose", rate=10, per_s=10, burst=10), limit("tight", tools="shell.*")
    )
    assert limits.check("shell.run", run_id="r").allowed
    for _ in range(5):
        refused = limits.check("shell.run", run_id="r")
        assert (refused.allowed, refused.limit) == (False, "tight")
    # The refused calls took nothing from the loose limit: 9 more fit in its burst.
    assert [limits.check("files.read", run_id="r").allowed for _ in range(10)] == [True] * 9 + [
        False
    ]
    clock.now += 10
    assert limits.check("shell.run", run_id="r").allowed


def test_the_longest_wait_is_reported() -> None:
    limits, _ = limiter(limit("short", per_s=5), limit("long", per_s=50))
    assert limits.check("t", run_id="r").allowed
    refused = limits.check("t", run_id="r")
    assert (refused.limit, refused.retry_after_s) == ("long", pytest.approx(50.0))


def test_idle_state_is_dropped() -> None:
    limits, clock = limiter(limit(per_s=1))
    for index in range(5000):
        assert limits.check("t", run_id=f"run-{index}").allowed
        clock.now += 0.01
    assert limits.tracked_keys() < 5000, "runs idle for a whole interval hold no state"


def test_limits_come_from_a_policy() -> None:
    policy = parse_policy(
        "version: 1\nrate_limits:\n  - {name: a, tools: [x.*, y.run], scope: run, rate: 2}\n"
    )
    (only,) = policy.rate_limits
    assert (only.per_s, only.burst, only.interval_s) == (60, 1, 30)
    assert only.counts("y.run") and not only.counts("y.runner")


@given(
    rate=st.integers(1, 20),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_in_any_window(
    rate: int, burst: int, gaps: list[float]
) -> None:
    limits, clock = limiter(limit(rate=rate, per_s=10, burst=burst))
    times: list[float] = []
    for gap in gaps:
        clock.now += gap
        if limits.check("t", run_id="r").allowed:
            times.append(clock.now)
    interval = 10 / rate
    for start_index, start in enumerate(times):
        for end_index in range(start_index, len(times)):
            window = times[end_index] - start
            assert end_index - start_index + 1 <= burst + window / interval + 1e-6

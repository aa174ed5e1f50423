"""Rate limits, exact with an injected clock, in every limit store."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import ConfigError, UsageError
from orchestrator.policy import (
    InMemoryLimitStore,
    LimitStore,
    RateLimit,
    RateLimitAnswer,
    RateLimiter,
    SqliteLimitStore,
    parse_policy,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Builds a store on a clock, inside a directory it may use.
StoreFactory = Callable[[Clock, Path], LimitStore]
STORES: dict[str, StoreFactory] = {
    "memory": lambda clock, _root: InMemoryLimitStore(clock=clock),
    "sqlite": lambda clock, root: SqliteLimitStore(root / "limits.db", clock=clock),
}
Build = Callable[..., tuple[RateLimiter, Clock]]


@pytest.fixture(params=sorted(STORES))
def limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Build]:
    """Build limiters over a store of each kind; every store behaves the same."""
    factory = STORES[request.param]
    stores: list[LimitStore] = []

    def build(*limits: RateLimit) -> tuple[RateLimiter, Clock]:
        clock = Clock()
        root = tmp_path / str(len(stores))
        root.mkdir()
        stores.append(factory(clock, root))
        return RateLimiter(list(limits), store=stores[-1]), clock

    yield build
    for store in stores:
        store.close()


def limit(name: str = "l", **fields: object) -> RateLimit:
    values: dict[str, object] = {"tools": "*", "scope": "run", "rate": 1, "per_s": 10}
    values.update(fields)
    return RateLimit(name=name, **values)  # type: ignore[arg-type]


def test_burst_then_refill_at_the_exact_interval(limiter: Build) -> None:
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


def test_a_long_pause_refills_no_more_than_the_burst(limiter: Build) -> None:
    limits, clock = limiter(limit(rate=6, per_s=60, burst=2))
    clock.now += 3600
    assert [limits.check("t", run_id="r").allowed for _ in range(3)] == [True, True, False]


def test_sustained_rate_matches_the_configuration(limiter: Build) -> None:
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
    limiter: Build, scope: str, calls: list[tuple[str, str]], expected: list[bool]
) -> None:
    limits, _ = limiter(limit(scope=scope))
    answers = [limits.check("t", run_id=run, principal=who).allowed for run, who in calls]
    assert answers == expected


def test_calls_without_a_scope_key_share_one_state(limiter: Build) -> None:
    limits, _ = limiter(limit(scope="principal"))
    assert limits.check("t").allowed
    assert not limits.check("t", run_id="other").allowed, "no principal: the same state"
    assert limits.check("t", principal="").allowed, "an empty principal is still a principal"


def test_limits_are_isolated_from_each_other_and_from_unmatched_tools(limiter: Build) -> None:
    limits, _ = limiter(
        limit("http", tools="http.*", scope="global"), limit("py", tools="python.*")
    )
    assert limits.check("http.fetch", run_id="a").allowed
    assert limits.check("python.run", run_id="a").allowed, "another limit's budget"
    assert not limits.check("http.fetch", run_id="b").allowed
    assert limits.check("files.read", run_id="b").allowed, "counted by no limit"


def test_no_partial_consumption(limiter: Build) -> None:
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


def test_the_longest_wait_is_reported(limiter: Build) -> None:
    limits, _ = limiter(limit("short", per_s=5), limit("long", per_s=50))
    assert limits.check("t", run_id="r").allowed
    refused = limits.check("t", run_id="r")
    assert refused.limit == "long" and refused.retry_after_s == pytest.approx(50.0)


def test_a_clock_stepping_back_costs_at_most_one_interval(limiter: Build) -> None:
    limits, clock = limiter(limit(per_s=10, burst=3))
    assert all(limits.check("t", run_id="r").allowed for _ in range(3))
    clock.now -= 3600  # the wall clock was set back an hour
    refused = limits.check("t", run_id="r")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10.0)
    clock.now += 10
    assert limits.check("t", run_id="r").allowed
    assert not limits.check("t", run_id="r").allowed, "and no more than the limit allows"


def test_try_check_answers_like_check(limiter: Build) -> None:
    limits, _ = limiter(limit(burst=2))
    answers = [limits.try_check("t", run_id="r") for _ in range(3)]
    assert [answer.allowed if answer else None for answer in answers] == [True, True, False]


def test_idle_state_is_dropped(limiter: Build) -> None:
    limits, clock = limiter(limit(per_s=1))
    for index in range(5000):
        assert limits.check("t", run_id=f"run-{index}").allowed
        clock.now += 0.01
    store = limits.store
    assert isinstance(store, InMemoryLimitStore | SqliteLimitStore)
    assert store.tracked_keys() < 5000, "runs idle for a whole interval hold no state"


def test_a_store_keeps_its_own_clock() -> None:
    with pytest.raises(UsageError, match="give the clock to the store"):
        RateLimiter([limit()], store=InMemoryLimitStore(), clock=Clock())


def test_limits_come_from_a_policy() -> None:
    policy = parse_policy(
        "version: 1\nrate_limits:\n  - {name: a, tools: [x.*, y.run], scope: run, rate: 2}\n"
    )
    (only,) = policy.rate_limits
    assert (only.per_s, only.burst, only.interval_s) == (60, 1, 30)
    assert only.counts("y.run") and not only.counts("y.runner")


@pytest.mark.parametrize(
    ("numbers", "field", "problem"),
    [
        ("rate: 1, per_s: .inf", "per_s", "expected a finite number, got inf"),
        ("rate: .inf", "rate", "expected a finite number, got inf"),
        # Each spaces calls by more seconds than a float holds: every call got through.
        ("rate: 1.0e-320", "burst", "span more time than can be counted"),
        ("rate: 1, per_s: 1.0e308, burst: 3", "burst", "span more time than can be counted"),
        # Larger than any float: the gateway failed to start with an OverflowError.
        (f"rate: 1, burst: {10**400}", "burst", "span more time than can be counted"),
    ],
)
def test_a_limit_whose_spacing_cannot_be_counted_is_refused(
    numbers: str, field: str, problem: str
) -> None:
    document = f"version: 1\nrate_limits:\n  - {{name: a, tools: x, scope: run, {numbers}}}\n"
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_policy(document, source="p.yaml")
    assert (caught.value.line, caught.value.field) == (3, f"rate_limits[0].{field}")


def test_a_limit_with_a_long_but_countable_spacing_refuses_the_second_call() -> None:
    policy = parse_policy(
        "version: 1\nrate_limits:\n  - {name: a, tools: x, scope: run, rate: 1, per_s: 1.0e300}\n"
    )
    limiter = RateLimiter(policy.rate_limits, clock=Clock())
    assert [limiter.check("x", run_id="r").allowed for _ in range(3)] == [True, False, False]


@pytest.mark.parametrize("kind", sorted(STORES))
@given(
    rate=st.integers(1, 20),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_in_any_window(
    kind: str, rate: int, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory() as root:
        store = STORES[kind](clock, Path(root))
        limits = RateLimiter([limit(rate=rate, per_s=10, burst=burst)], store=store)
        times: list[float] = []
        for gap in gaps:
            clock.now += gap
            if limits.check("t", run_id="r").allowed:
                times.append(clock.now)
        store.close()
    interval = 10 / rate
    for start_index, start in enumerate(times):
        for end_index in range(start_index, len(times)):
            window = times[end_index] - start
            assert end_index - start_index + 1 <= burst + window / interval + 1e-6


@pytest.mark.parametrize(
    ("document", "line", "field"),
    [
        ("version: 1\napproval_timeout_s: .inf\n", 2, "approval_timeout_s"),
        (
            "version: 1\nrules:\n  - {name: r, tools: x, decision: require_approval,"
            " approval_timeout_s: .inf}\n",
            3,
            "rules[0].approval_timeout_s",
        ),
    ],
)
def test_an_approval_wait_without_end_is_refused(document: str, line: int, field: str) -> None:
    """An infinite wait reached the API and the webhook as "expires_at": null."""
    with pytest.raises(ConfigError, match="expected a finite number, got inf") as caught:
        parse_policy(document, source="p.yaml")
    assert (caught.value.line, caught.value.field) == (line, field)


@pytest.mark.parametrize("limit", [None, ""])
def test_a_refusal_always_names_its_limit(limit: str | None) -> None:
    """The name is the gateway's metric label: a nameless refusal made a series limit=""."""
    with pytest.raises(ValueError, match="names the limit"):
        RateLimitAnswer(allowed=False, retry_after_s=1.0, limit=limit)
    assert RateLimitAnswer(allowed=True).limit is None
    assert RateLimitAnswer(allowed=False, limit="reads").limit == "reads"

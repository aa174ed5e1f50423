"""The Redis limit store against a real redis-server on 127.0.0.1: the same answers as SQLite.

Every test gets its own server (random free port, its own directory, no
persistence), stopped at the end. Limits use long intervals where the
server's clock would otherwise make an answer depend on the test's speed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from orchestrator.audit import AuditLog
from orchestrator.config import builtin_profiles, load_config
from orchestrator.errors import ConfigError, InfrastructureError, UsageError
from orchestrator.gateway import Gateway
from orchestrator.metrics import Metrics
from orchestrator.platform import Platform
from orchestrator.platform._limits import open_limit_store
from orchestrator.policy import (
    BudgetUsage,
    LimitStore,
    ModelBudget,
    ModelLimits,
    RateCell,
    RateLimiter,
    RateVerdict,
    RedisLimitStore,
    SqliteLimitStore,
    parse_policy,
)
from orchestrator.testing.backend import ScriptedBackend, tool_output
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolStatus

pytestmark = pytest.mark.redis

BOUND_S = 10.0
HOUR = 3600.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One redis-server on 127.0.0.1, a free port and a directory of its own."""

    def __init__(self, directory: Path, *arguments: str) -> None:
        self.directory = directory
        self.arguments = arguments
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: scripts/setup.sh installs it (Debian redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
                *self.arguments,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # nothing left behind, even when it never answered
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + BOUND_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=BOUND_S)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LimitStore]:
    """Each conformance test runs on the SQLite store and on the Redis store."""
    opened: LimitStore
    if request.param == "sqlite":
        opened = SqliteLimitStore(tmp_path / "limits.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        opened = RedisLimitStore(server.url)
    try:
        yield opened
    finally:
        opened.close()


def cell(key: str, *, interval_s: float = HOUR, burst: int = 1) -> RateCell:
    return RateCell(key=key, interval_s=interval_s, tolerance_s=(burst - 1) * interval_s)


# --- conformance: what every shared store must answer --------------------------------------


def test_a_burst_is_admitted_then_refused_with_the_wait(store: LimitStore) -> None:
    cells = [cell("g", burst=3)]
    assert [store.acquire(cells).allowed for _ in range(3)] == [True, True, True]
    refused = store.acquire(cells)
    assert (refused.allowed, refused.refused, refused.reason) == (False, 0, None)
    assert HOUR - 5 < refused.retry_after_s <= HOUR


def test_all_cells_are_charged_or_none(store: LimitStore) -> None:
    wide, narrow = cell("wide", burst=5), cell("narrow", burst=1)
    assert store.acquire([wide, narrow]).allowed
    refused = store.acquire([wide, narrow])
    assert (refused.allowed, refused.refused) == (False, 1)
    # The refusal took nothing from the wide limit: 4 of its 5 remain.
    assert [store.acquire([wide]).allowed for _ in range(5)] == [True] * 4 + [False]


def test_the_longest_wait_names_the_refusing_cell(store: LimitStore) -> None:
    short, long = cell("short", interval_s=60), cell("long", interval_s=HOUR)
    assert store.acquire([short, long]).allowed
    refused = store.acquire([short, long])
    assert refused.refused == 1 and refused.retry_after_s > 60


def test_budgets_reserve_calls_and_settle_tokens(store: LimitStore) -> None:
    assert store.count_call("run", max_calls=2, max_tokens=None) == (True, _usage(1, 0))
    store.add_tokens("run", 40)
    assert store.count_call("run", max_calls=2, max_tokens=None) == (True, _usage(2, 40))
    assert store.count_call("run", max_calls=2, max_tokens=None) == (False, _usage(2, 40))
    assert store.usage("other") == _usage(0, 0), "budgets are per key"
    store.forget("run")
    assert store.usage("run") == _usage(0, 0)


def test_the_token_limit_stops_the_next_call(store: LimitStore) -> None:
    budget = ModelBudget(ModelLimits(max_tokens_per_run=100), store=store, run_id="r")
    first = budget.start_call()
    assert first.allowed and first.remaining_tokens == 100
    budget.add_tokens(120)  # known only after the call: settled, overshooting once
    refused = budget.start_call()
    assert (refused.allowed, refused.limit, refused.used) == (False, "max_tokens_per_run", 120)


def test_a_rate_limiter_names_the_limit(store: LimitStore) -> None:
    policy = parse_policy(
        "version: 1\nrate_limits:\n"
        "  - {name: per-run, tools: 't.*', scope: run, rate: 1, per_s: 3600, burst: 2}\n"
    )
    limiter = RateLimiter(policy.rate_limits, store=store)
    answers = [limiter.check("t.x", run_id="a") for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False]
    assert answers[2].limit == "per-run"
    assert limiter.check("t.x", run_id="b").allowed, "another run has its own state"


async def test_the_async_check_answers_as_the_sync_one(store: LimitStore) -> None:
    # The gateway's path: the same cells, charged all or none, on the event loop.
    wide, narrow = cell("wide", burst=3), cell("narrow", burst=1)
    assert (await store.acquire_async([wide, narrow])).allowed
    refused = await store.acquire_async([wide, narrow])
    assert (refused.allowed, refused.refused) == (False, 1)
    assert HOUR - 5 < refused.retry_after_s <= HOUR
    # Both paths charge one state: 2 of the wide limit's 3 remain, sync or async.
    assert store.acquire([wide]).allowed
    assert (await store.acquire_async([wide])).allowed
    assert not store.acquire([wide]).allowed
    await store.aclose()


async def test_the_async_rate_limiter_names_the_limit(store: LimitStore) -> None:
    policy = parse_policy(
        "version: 1\nrate_limits:\n"
        "  - {name: per-run, tools: 't.*', scope: run, rate: 1, per_s: 3600, burst: 2}\n"
    )
    limiter = RateLimiter(policy.rate_limits, store=store)
    answers = [await limiter.check_async("t.x", run_id="a") for _ in range(3)]
    assert [a.allowed for a in answers] == [True, True, False]
    assert answers[2].limit == "per-run"
    assert (await limiter.check_async("t.x", run_id="b")).allowed
    assert (await limiter.check_async("untouched")).allowed, "no limit counts it"
    await store.aclose()


def _usage(calls: int, tokens: int) -> BudgetUsage:
    return BudgetUsage(calls=calls, tokens=tokens)


# --- Redis: the server's clock, scripts, keys ------------------------------------------------


def test_capacity_returns_on_the_servers_clock(redis_server: RedisServer) -> None:
    store = RedisLimitStore(redis_server.url)
    cells = [cell("fast", interval_s=0.2)]
    assert store.acquire(cells).allowed
    refused = store.acquire(cells)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.2
    time.sleep(refused.retry_after_s + 0.01)
    assert store.acquire(cells).allowed
    store.close()


def test_a_tat_far_ahead_is_clamped(redis_server: RedisServer) -> None:
    # A state written against a clock far ahead (or before a limit was tightened)
    # costs at most one interval of waiting, as in every store.
    store = RedisLimitStore(redis_server.url)
    seconds, _ = store.client.time()
    store.client.set(store.rate_key("g"), str(seconds + 10 * HOUR))
    refused = store.acquire([cell("g", interval_s=60, burst=2)])
    assert not refused.allowed and 55 < refused.retry_after_s <= 61
    store.close()


def test_keys_live_under_the_prefix_and_expire(redis_server: RedisServer) -> None:
    store = RedisLimitStore(redis_server.url, key_prefix="org-a:")
    other = RedisLimitStore(redis_server.url, key_prefix="org-b:")
    assert store.acquire([cell("g", interval_s=30)]).allowed
    assert other.acquire([cell("g", interval_s=30)]).allowed, "another prefix, other limits"
    store.count_call("run", max_calls=None, max_tokens=None)
    client = store.client
    assert sorted(client.keys("*")) == ["org-a:budget:run", "org-a:rate:g", "org-b:rate:g"]
    # A state expires when its TAT has passed (then it carries nothing), plus a margin.
    assert 29_000 < client.pttl("org-a:rate:g") <= 31_000
    assert 0 < client.ttl("org-a:budget:run") <= 7 * 24 * 3600
    assert store.tracked_keys() == 1
    store.acquire([cell("short", interval_s=0.05)])
    deadline = time.monotonic() + BOUND_S
    while client.exists("org-a:rate:short"):
        assert time.monotonic() < deadline, "an idle state never expired"
        time.sleep(0.05)
    store.close()
    other.close()


def test_a_server_that_lost_its_scripts_gets_them_again(redis_server: RedisServer) -> None:
    store = RedisLimitStore(redis_server.url)
    assert store.acquire([cell("g", burst=2)]).allowed
    store.client.script_flush()
    assert store.acquire([cell("g", burst=2)]).allowed
    assert not store.acquire([cell("g", burst=2)]).allowed
    store.close()


def test_hostile_keys_stay_keys(redis_server: RedisServer) -> None:
    # Run ids and principals end up in keys; Lua sees them only as KEYS.
    store = RedisLimitStore(redis_server.url)
    for key in ["') redis.call('FLUSHALL') --", "*", "a\nb", "ü" * 300]:
        assert store.acquire([cell(key)]).allowed
        assert not store.acquire([cell(key)]).allowed
        assert store.count_call(key, max_calls=1, max_tokens=None)[0]
    assert store.tracked_keys() == 4
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379", "the scheme must be"),
        ("redis://127.0.0.1:notaport/0", "not a valid URL"),
        ("redis:///0", "give the server's host"),
        ("redis://127.0.0.1:6379/db", "the database must be a number"),
    ],
)
def test_bad_urls_are_refused_before_anything_is_sent(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RedisLimitStore(url)


def test_the_name_never_shows_the_password() -> None:
    store = RedisLimitStore("redis://:hunter2@127.0.0.1:1/3")
    assert store.name == "redis://127.0.0.1:1/3"
    assert "hunter2" not in (store.acquire([cell("g")]).reason or "")
    store.close()


# --- Redis unreachable: closed by default, open when configured ------------------------------


def test_unreachable_fails_closed_with_the_reason(redis_server: RedisServer) -> None:
    outcomes: list[str] = []
    store = RedisLimitStore(redis_server.url, on_unavailable_hook=outcomes.append, cooldown_s=0)
    policy = parse_policy(
        "version: 1\nrate_limits:\n"
        "  - {name: g, tools: 't.*', scope: global, rate: 1, per_s: 3600, burst: 100}\n"
    )
    limiter = RateLimiter(policy.rate_limits, store=store)
    assert limiter.check("t.x").allowed
    redis_server.stop()
    refused = limiter.check("t.x")
    assert not refused.allowed and refused.retry_after_s > 0
    assert refused.limit == f"limit store {redis_server.url} unavailable"
    with pytest.raises(InfrastructureError, match="unavailable") as caught:
        store.count_call("r", max_calls=5, max_tokens=None)
    assert caught.value.retryable and caught.value.op == "limits.count_call"
    with pytest.raises(InfrastructureError):
        store.add_tokens("r", 5)
    store.forget("r")  # at a run's end: left to the TTL, never an error
    assert outcomes == ["denied", "denied"]
    # Back again: the state it kept is still there (one call of 100 used).
    redis_server.start()
    assert limiter.check("t.x").allowed
    assert store.client.exists(store.rate_key("global:1:g-"))
    store.close()


def test_unreachable_fails_open_when_configured(redis_server: RedisServer) -> None:
    outcomes: list[str] = []
    store = RedisLimitStore(
        redis_server.url, on_unavailable="open", on_unavailable_hook=outcomes.append
    )
    assert store.acquire([cell("g")]).allowed
    assert not store.acquire([cell("g")]).allowed, "reachable: the limit holds"
    redis_server.stop()
    assert all(store.acquire([cell("g")]).allowed for _ in range(3))
    assert store.count_call("r", max_calls=0, max_tokens=None)[0]
    store.add_tokens("r", 10)
    assert store.usage("r").calls == 0
    assert outcomes == ["admitted"] * 4
    store.close()


async def test_the_async_check_fails_closed_and_comes_back(redis_server: RedisServer) -> None:
    outcomes: list[str] = []
    store = RedisLimitStore(redis_server.url, on_unavailable_hook=outcomes.append, cooldown_s=0)
    assert (await store.acquire_async([cell("g", burst=9)])).allowed
    redis_server.stop()
    refused = await store.acquire_async([cell("g", burst=9)])
    assert (refused.allowed, refused.reason) == (
        False,
        f"limit store {redis_server.url} unavailable",
    )
    assert refused.retry_after_s > 0 and outcomes == ["denied"]
    redis_server.start()
    assert (await store.acquire_async([cell("g", burst=9)])).allowed, "a fresh connection"
    await store.aclose()


async def test_the_async_check_fails_open_when_configured(redis_server: RedisServer) -> None:
    outcomes: list[str] = []
    store = RedisLimitStore(
        redis_server.url, on_unavailable="open", on_unavailable_hook=outcomes.append
    )
    assert (await store.acquire_async([cell("g")])).allowed
    assert not (await store.acquire_async([cell("g")])).allowed, "reachable: the limit holds"
    redis_server.stop()
    assert all([(await store.acquire_async([cell("g")])).allowed for _ in range(3)])
    assert outcomes == ["admitted"] * 3
    await store.aclose()


async def test_a_dead_server_costs_the_async_check_one_wait() -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", cooldown_s=60)
    started = time.monotonic()
    answers = [await store.acquire_async([cell("g")]) for _ in range(200)]
    assert not any(answer.allowed for answer in answers)
    assert time.monotonic() - started < 2
    await store.aclose()


def test_each_event_loop_gets_its_own_async_client(redis_server: RedisServer) -> None:
    # redis.asyncio's connections belong to the loop that opened them; a store
    # shared by two loops must not mix them, and close() from outside any loop
    # closes the clients of both on their own loops.
    store = RedisLimitStore(redis_server.url, key_prefix="loops:")
    loops = [asyncio.new_event_loop() for _ in range(2)]

    async def check() -> bool:
        return (await store.acquire_async([cell("g", burst=3)])).allowed

    try:
        assert [loop.run_until_complete(check()) for loop in loops] == [True, True]
        assert store.acquire([cell("g", burst=3)]).allowed
        assert not store.acquire([cell("g", burst=3)]).allowed, "three calls on one state"
        observer = redis.Redis.from_url(redis_server.url)
        assert len(observer.client_list()) == 4, "two loops' clients, the store's, this one"
        store.close()
        deadline = time.monotonic() + BOUND_S
        while len(observer.client_list()) != 1:
            assert time.monotonic() < deadline, "a loop's connection was left open"
            time.sleep(0.01)
        observer.close()
    finally:
        for loop in loops:
            loop.close()


def test_a_dead_server_costs_one_wait_not_one_per_call() -> None:
    # Nothing listens there: the first step fails at once, the next ones do not try.
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", cooldown_s=60)
    started = time.monotonic()
    answers = [store.acquire([cell("g")]) for _ in range(200)]
    assert not any(answer.allowed for answer in answers)
    assert time.monotonic() - started < 2
    store.close()


# --- through the platform's assembly and the gateway -----------------------------------------

POLICY = """
version: 1
default: deny
rules:
  - {name: read, tools: files.read, decision: allow}
rate_limits:
  - {name: reads, tools: files.read, scope: global, rate: 1, per_s: 3600, burst: 2}
"""


def gateway(root: Path, store: LimitStore, metrics: Metrics, replies: int) -> Gateway:
    registry = ToolRegistry()
    registry.load("toolkits.files")
    policy = parse_policy(POLICY)
    backend = ScriptedBackend([tool_output({"content": "x"}) for _ in range(replies)])
    return Gateway(
        ToolExecutor(registry, backend, profiles=builtin_profiles("runc").values()),
        policy,
        AuditLog(root / "audit.jsonl"),
        metrics=metrics,
        limit_store=store,
    )


def read(number: int) -> ToolCall:
    return ToolCall(id=f"c{number}", name="files.read", arguments={"path": "a"}, run_id="r")


async def test_the_configured_store_limits_the_gateway_and_fails_closed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text(f"limits:\n  store: {redis_server.url}\n  key_prefix: 'gw:'\n")
    settings = load_config(config, environ={}).config
    metrics = Metrics()
    store = open_limit_store(settings, metrics)
    assert isinstance(store, RedisLimitStore)
    gate = gateway(tmp_path, store, metrics, replies=2)
    statuses = [(await gate.call(read(n))).status for n in range(3)]
    assert statuses == [ToolStatus.OK, ToolStatus.OK, ToolStatus.RATE_LIMITED]
    assert store.client.keys("gw:*") == ["gw:rate:global:5:reads-"]
    redis_server.stop()
    refused = await gate.call(read(10))
    assert refused.status is ToolStatus.RATE_LIMITED
    assert (refused.error or "").startswith(
        f"limit store {redis_server.url} unavailable, and limits fail closed: the call was not run;"
    )
    sample = metrics.registry.get_sample_value
    assert sample("stockade_limit_store_unavailable_total", {"outcome": "denied"}) == 1
    assert sample("stockade_limit_store_unavailable_total", {"outcome": "admitted"}) == 0
    await store.aclose()


class _ThreadWatchingStore(RedisLimitStore):
    """The Redis store, noting each synchronous acquire (which only a thread would make)."""

    synchronous: int = 0

    def acquire(self, cells: Sequence[RateCell]) -> RateVerdict:
        self.synchronous += 1
        return super().acquire(cells)


async def test_the_gateway_awaits_redis_on_its_event_loop(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    store = _ThreadWatchingStore(redis_server.url)
    gate = gateway(tmp_path, store, Metrics(), replies=2)
    statuses = [(await gate.call(read(n))).status for n in range(3)]
    assert statuses == [ToolStatus.OK, ToolStatus.OK, ToolStatus.RATE_LIMITED]
    assert store.synchronous == 0, "the check went through a thread"
    assert store.client.keys("stockade:*") == ["stockade:rate:global:5:reads-"]
    await store.aclose()


async def test_two_platforms_share_one_limit_and_fail_closed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Two orchestrators (each its own state directory, as on two hosts) assembled
    # from their stockade.yaml: the burst of 2 is one for both of them.
    (tmp_path / "policy.yaml").write_text(POLICY)
    platforms = []
    for name in ("a", "b"):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"state_dir: {tmp_path / name}\npolicy: policy.yaml\n"
            f"limits:\n  store: {redis_server.url}\n"
        )
        platforms.append(load_config(config, environ={}))
    backend = ScriptedBackend([tool_output({"content": "x"}) for _ in range(2)])
    async with (
        Platform.open(platforms[0], backend=backend) as first,
        Platform.open(platforms[1], backend=backend) as second,
    ):
        assert (await first.gateway.call(read(1))).status is ToolStatus.OK
        assert (await second.gateway.call(read(2))).status is ToolStatus.OK
        refused = await first.gateway.call(read(3))
        assert (refused.status, refused.retry_after_s is not None) == (
            ToolStatus.RATE_LIMITED,
            True,
        )
        assert "'reads'" in (refused.error or "")
        assert (await second.gateway.call(read(4))).status is ToolStatus.RATE_LIMITED
        redis_server.stop()
        down = await second.gateway.call(read(5))
        assert down.status is ToolStatus.RATE_LIMITED
        assert f"limit store {redis_server.url} unavailable" in (down.error or "")
        unavailable = second.metrics.registry.get_sample_value
        assert unavailable("stockade_limit_store_unavailable_total", {"outcome": "denied"}) == 1
        assert unavailable("stockade_limit_store_unavailable_total", {"outcome": "admitted"}) == 0
    assert backend.requests and len(backend.requests) == 2, "only the two admitted calls ran"


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    store = open_limit_store(load_config(config, environ={}).config, Metrics())
    assert isinstance(store, SqliteLimitStore)
    store.close()


def test_a_malformed_url_names_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("version: 1\nlimits:\n  on_unavailable: open\n  store: redis//r:6379\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    error = caught.value
    assert (error.file, error.line, error.field) == (str(config), 4, "limits.store")
    assert "redis//r:6379" in str(error)


def test_the_environment_names_the_store(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("version: 1\n")
    loaded = load_config(config, environ={"STOCKADE_LIMITS_STORE": "redis://127.0.0.1:1/0"})
    assert loaded.config.limits.store == "redis://127.0.0.1:1/0"


def test_doctor_checks_a_redis_store(tmp_path: Path, redis_server: RedisServer) -> None:
    from orchestrator.platform.doctor import _Doctor

    config = tmp_path / "stockade.yaml"
    config.write_text(f"limits:\n  store: {redis_server.url}\n")
    doctor = _Doctor(load_config(config, environ={}), "")
    doctor.limit_store()
    redis_server.stop()
    doctor.limit_store()
    (up, down) = doctor.checks
    assert (up.name, up.outcome) == ("limit store reachable", "ok")
    assert up.detail.startswith(f"{redis_server.url} (Redis ")
    assert (down.outcome, down.detail.split(":")[0:2]) == ("failed", ["redis", "//127.0.0.1"])
    assert "ConnectionError" in down.detail and "limits.store: sqlite" in down.fix
    sqlite = tmp_path / "sqlite.yaml"
    sqlite.write_text("version: 1\n")
    quiet = _Doctor(load_config(sqlite, environ={}), "")
    quiet.limit_store()
    assert quiet.checks == [], "the default store is the state directory's check"


def test_an_outage_is_logged_once_and_its_end_too(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisLimitStore(redis_server.url, cooldown_s=0)
    assert store.acquire([cell("g", burst=9)]).allowed
    redis_server.stop()
    with caplog.at_level("WARNING", logger="orchestrator.policy._redis_limits"):
        for _ in range(5):
            assert not store.acquire([cell("g", burst=9)]).allowed
        redis_server.start()
        assert store.acquire([cell("g", burst=9)]).allowed
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "unavailable (ConnectionError" in messages[0] and "failing closed" in messages[0]
    assert "answers again" in messages[1]
    store.close()


async def test_failing_open_is_counted_by_the_metric(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text(f"limits:\n  store: {redis_server.url}\n  on_unavailable: open\n")
    metrics = Metrics()
    store = open_limit_store(load_config(config, environ={}).config, metrics)
    gate = gateway(tmp_path, store, metrics, replies=4)
    statuses = [(await gate.call(read(n))).status for n in range(3)]
    assert statuses == [ToolStatus.OK, ToolStatus.OK, ToolStatus.RATE_LIMITED]
    redis_server.stop()
    # Unreachable and failing open: the calls run, uncounted, and the metric says so.
    assert [(await gate.call(read(n))).status for n in range(3, 5)] == [ToolStatus.OK] * 2
    sample = metrics.registry.get_sample_value
    assert sample("stockade_limit_store_unavailable_total", {"outcome": "admitted"}) == 2
    assert sample("stockade_limit_store_unavailable_total", {"outcome": "denied"}) == 0
    await store.aclose()


def test_the_password_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path, "--requirepass", "s3cret-pw")
    server.start()
    try:
        config = tmp_path / "stockade.yaml"
        config.write_text(f"limits:\n  store: {server.url}\n  password_env: LIMITS_PW\n")
        settings = load_config(config, environ={}).config
        with pytest.raises(ConfigError, match="LIMITS_PW") as caught:
            open_limit_store(settings, Metrics())
        assert caught.value.field == "limits.password_env"
        monkeypatch.setenv("LIMITS_PW", "s3cret-pw")
        store = open_limit_store(settings, Metrics())
        assert store.acquire([cell("g")]).allowed
        store.close()
        # A wrong password is an unavailable store: refused, naming it, never the password.
        monkeypatch.setenv("LIMITS_PW", "wrong")
        wrong = open_limit_store(settings, Metrics())
        refused = wrong.acquire([cell("g")])
        assert (refused.allowed, refused.reason) == (False, f"limit store {server.url} unavailable")
        wrong.close()
    finally:
        server.stop()


def test_doctor_asks_redis_with_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stockade doctor` reached a password-protected Redis without its password and
    called a store that works unreachable."""
    from orchestrator.platform.doctor import _Doctor

    server = RedisServer(tmp_path, "--requirepass", "s3cret-pw")
    server.start()
    try:
        config = tmp_path / "stockade.yaml"
        config.write_text(f"limits:\n  store: {server.url}\n  password_env: LIMITS_PW\n")
        loaded = load_config(config, environ={})
        unset = _Doctor(loaded, "")
        unset.limit_store()
        monkeypatch.setenv("LIMITS_PW", "s3cret-pw")
        doctor = _Doctor(loaded, "")
        doctor.limit_store()
    finally:
        server.stop()
    assert [(check.outcome, check.detail) for check in unset.checks] == [
        (
            "failed",
            "limits.password_env: environment variable LIMITS_PW (Redis's password) is not set",
        )
    ]
    assert unset.checks[0].fix == "export LIMITS_PW=<Redis's password>"
    ((check,),) = (doctor.checks,)
    assert (check.outcome, check.detail.startswith(f"{server.url} (Redis ")) == ("ok", True)


def test_a_password_in_a_bad_url_is_not_repeated() -> None:
    with pytest.raises(UsageError) as caught:
        RedisLimitStore("redis://:hunter2@127.0.0.1:port/0")
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)


async def test_a_traced_gateway_spans_the_check_it_awaits(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis never answers inline, so the traced gateway's rate_limit span is the
    # awaited check's, marked as waited.
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator.config import TracingSettings
    from orchestrator.tracing._gateway import TracedGateway
    from orchestrator.tracing._tracer import RunTracer

    exporter = InMemorySpanExporter()
    tracer = RunTracer(TracingSettings(enabled=True), exporter=exporter)
    store = RedisLimitStore(redis_server.url)
    registry = ToolRegistry()
    registry.load("toolkits.files")
    gate = TracedGateway(
        ToolExecutor(
            registry,
            ScriptedBackend([tool_output({"content": "x"})]),
            profiles=builtin_profiles("runc").values(),
        ),
        parse_policy(POLICY),
        AuditLog(tmp_path / "audit.jsonl"),
        metrics=Metrics(),
        limit_store=store,
        tracer=tracer,
    )
    with tracer.run(run_id="r", agent="a", model="m", goal="g", principal="p", resumed=False):
        assert (await gate.call(read(1))).status is ToolStatus.OK
    tracer.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "stockade.rate_limit"]
    attributes = dict(span.attributes or {})
    assert attributes["stockade.rate_limit.allowed"] is True
    assert attributes["stockade.rate_limit.waited"] is True
    await store.aclose()

"""Gateway overhead with the Redis limit store, side by side with the SQLite store.

One run, one machine, interleaved rounds so drift hits every row alike. The
sandbox is taken out (a scripted backend answers at once); the policy has one
rule and three rate limits (run, principal, global) that count every call and
never refuse it; the audit log ``fsync``-s every record (group commit, the
default). Rows:

- ``executor only``: ``ToolExecutor.run`` on a validated call, the baseline;
- ``gateway, limits in SQLite``: ``Gateway.call`` on the gateway
  ``Platform.open`` assembles (every entrance's), with the default store;
- ``gateway, limits in Redis``: the same with ``limits.store: redis://``, a
  real ``redis-server`` this script starts on 127.0.0.1 (free port, no
  persistence, its own directory) and stops at the end;
- the same two without the audit log's ``fsync``, which dominates the
  gateway's time on a loaded disk, so what the store itself costs shows;
- each store's rate check alone (``RateLimiter.check`` on this thread; for
  Redis also awaited on the event loop through ``redis.asyncio``, as the
  gateway calls it now, and through ``asyncio.to_thread``, as it did before),
  and a Redis ``PING`` (the network round trip, the floor of any networked store).

Gateway overhead = the gateway row's p50 minus the executor's p50. Target
(issue 14): with the Redis store, <= 1 ms p50.

Run: ``.venv/bin/python benchmarks/limits_bench.py [--calls 4000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _bench import percentiles, shipped_gateway, stop_on_sigterm

from orchestrator.audit import AuditLog
from orchestrator.config import builtin_profiles
from orchestrator.gateway import Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import (
    LimitStore,
    Policy,
    RateLimiter,
    RedisLimitStore,
    SqliteLimitStore,
    parse_policy,
)
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolResult

POLICY = """
version: 1
default: deny
rules:
  - {name: python, tools: python.run, decision: allow}
rate_limits:
  - {name: per-run, tools: '*', scope: run, rate: 1000000, per_s: 1, burst: 1000000}
  - {name: per-principal, tools: 'python.*', scope: principal, rate: 1000000, per_s: 1,
     burst: 1000000}
  - {name: global, tools: '*', scope: global, rate: 1000000, per_s: 1, burst: 1000000}
"""
BASELINE = "executor only (baseline, no gateway)"
SQLITE = "gateway, limits in SQLite (single-host default)"
REDIS = "gateway, limits in Redis"
SQLITE_NOFSYNC = "gateway, audit without fsync, limits in SQLite"
REDIS_NOFSYNC = "gateway, audit without fsync, limits in Redis"
TARGET_US = 1000.0


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server on 127.0.0.1 and a free port, stopped on exit; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(timeout=10)


def make_call(number: int) -> ToolCall:
    return ToolCall(
        id=f"call-{number}",
        name="python.run",
        arguments=json.dumps({"code": "print(1)"}),
        run_id=f"run-{number % 8}",
        principal="bench",
    )


async def timed(calls: int, step: Callable[[int], Any]) -> list[float]:
    samples = []
    for number in range(calls):
        started = time.perf_counter()
        done = step(number)
        if asyncio.iscoroutine(done):
            await done
        samples.append(time.perf_counter() - started)
    return samples


def unsynced_gateway(
    executor: ToolExecutor, policy: Policy, home: Path, store: LimitStore
) -> Gateway:
    """A gateway whose audit log does not ``fsync``: not a configuration the platform offers,
    built here to show what the store costs apart from the disk."""
    log = AuditLog(home / f"{type(store).__name__}-unsynced.jsonl", fsync=False)
    return Gateway(executor, policy, log, metrics=Metrics(), limit_store=store)


async def through(gw: Gateway, n: int) -> None:
    result = await gw.call(make_call(n))
    assert result.status.value == "ok", result


async def measure(calls: int, home: Path, url: str) -> list[tuple[str, list[float]]]:
    redis_limits = {"store": url, "key_prefix": "bench:"}
    async with (
        shipped_gateway(home / "on-sqlite", POLICY) as on_sqlite,
        shipped_gateway(home / "on-redis", POLICY, limits=redis_limits) as on_redis,
    ):
        return await _measure(calls, home, url, on_sqlite, on_redis)


async def _measure(
    calls: int, home: Path, url: str, on_sqlite: Gateway, on_redis: Gateway
) -> list[tuple[str, list[float]]]:
    policy = parse_policy(POLICY)
    registry = ToolRegistry()
    registry.load("toolkits.python")
    executor = ToolExecutor(registry, ScriptedBackend(), profiles=builtin_profiles("runc").values())
    checked = registry.validate(make_call(0))
    assert not isinstance(checked, ToolResult)
    sqlite = SqliteLimitStore(home / "limits.db")
    redis = RedisLimitStore(url, key_prefix="bench:")
    unsynced_sqlite = unsynced_gateway(executor, policy, home, sqlite)
    unsynced_redis = unsynced_gateway(executor, policy, home, redis)
    sqlite_alone = RateLimiter(policy.rate_limits, store=SqliteLimitStore(home / "alone.db"))
    redis_alone = RateLimiter(policy.rate_limits, store=RedisLimitStore(url, key_prefix="alone:"))
    ping = redis.client.ping

    async def baseline(_n: int) -> None:
        await executor.run(checked)

    async def redis_in_thread(n: int) -> None:
        await asyncio.to_thread(redis_alone.check, "python.run", run_id=f"r{n % 8}")

    async def redis_on_loop(n: int) -> None:
        await redis_alone.check_async("python.run", run_id=f"r{n % 8}")

    rows: list[tuple[str, Callable[[int], Any]]] = [
        (BASELINE, baseline),
        (SQLITE, lambda n: through(on_sqlite, n)),
        (REDIS, lambda n: through(on_redis, n)),
        (SQLITE_NOFSYNC, lambda n: through(unsynced_sqlite, n)),
        (REDIS_NOFSYNC, lambda n: through(unsynced_redis, n)),
        (
            "step: rate limits (3), SQLite, this thread",
            lambda n: sqlite_alone.check("python.run", run_id=f"r{n % 8}"),
        ),
        (
            "step: rate limits (3), Redis, this thread",
            lambda n: redis_alone.check("python.run", run_id=f"r{n % 8}"),
        ),
        ("step: rate limits (3), Redis, awaited on the loop (the gateway's)", redis_on_loop),
        ("step: rate limits (3), Redis, via asyncio.to_thread (before)", redis_in_thread),
        ("step: Redis PING (the network round trip)", lambda _n: ping()),
    ]
    for _, step in rows:  # warm-up: caches, scripts loaded, connections open
        await timed(200, step)
    results: dict[str, list[float]] = {name: [] for name, _ in rows}
    rounds = 10
    for _ in range(rounds):
        for name, step in rows:
            results[name] += await timed(calls // rounds, step)
    for store in (sqlite, redis, sqlite_alone.store, redis_alone.store):
        await store.aclose()
    return [(name, results[name]) for name, _ in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4000, help="Calls per row.")
    options = parser.parse_args()
    print(
        f"# {platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="limits-bench-") as tmp:
        home = Path(tmp)
        (home / "redis").mkdir()
        with redis_server(home / "redis") as url:
            rows = asyncio.run(measure(options.calls, home, url))
    print(f"\n{'row':<66} {'p50 µs':>9} {'p95 µs':>9} {'p99 µs':>9} {'mean µs':>9}")
    p50: dict[str, float] = {}
    for name, samples in rows:
        q50, q95, q99 = percentiles(samples, scale=1e6)
        p50[name] = q50
        mean = statistics.fmean(samples) * 1e6
        print(f"{name:<66} {q50:>9.1f} {q95:>9.1f} {q99:>9.1f} {mean:>9.1f}")
    sqlite_overhead = p50[SQLITE] - p50[BASELINE]
    redis_overhead = p50[REDIS] - p50[BASELINE]
    print(f"\ngateway overhead p50, limits in SQLite: {sqlite_overhead:.1f} µs")
    verdict = "met" if redis_overhead <= TARGET_US else "NOT met"
    print(
        f"gateway overhead p50, limits in Redis:  {redis_overhead:.1f} µs "
        f"(target <= {TARGET_US:.0f} µs: {verdict}; Redis adds "
        f"{p50[REDIS] - p50[SQLITE]:.1f} µs over SQLite)"
    )
    print(
        "without the audit's fsync (what the store costs, not the disk): "
        f"SQLite {p50[SQLITE_NOFSYNC] - p50[BASELINE]:.1f} µs, "
        f"Redis {p50[REDIS_NOFSYNC] - p50[BASELINE]:.1f} µs"
    )
    print(f"# load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

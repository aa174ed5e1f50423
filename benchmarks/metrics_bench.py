"""The cost of instrumentation: gateway overhead per call with metrics on and off, side by side.

Two platforms are opened from the same configuration through ``Platform.open``
(the shipped default policy, the durable audit log with its ``fsync``, limits
shared through SQLite), one with ``metrics.enabled`` and one without, each
over a scripted sandbox that answers at once, so what is measured is the
gateway's own work. Calls alternate between the two so that both see the same
machine. Then the instrumentation alone: the metric updates one call makes
(decision, status, duration, output size, audit record), with real and with
disabled instruments; and the JSON log line a call writes when JSON logs are on.

    .venv/bin/python benchmarks/metrics_bench.py --calls 3000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from _bench import stop_on_sigterm

from orchestrator.config import MetricsSettings, StockadeConfig
from orchestrator.metrics import Metrics, configure_logging
from orchestrator.platform import Platform
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"| {name} | {len(ordered)} | {p50 * 1e6:.1f} | {p99 * 1e6:.1f} |"


async def gateway_calls(calls: int, home: Path) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"metrics on": [], "metrics off": []}
    async with AsyncExitStack() as stack:
        platforms = {}
        for name, enabled in (("metrics on", True), ("metrics off", False)):
            config = StockadeConfig(
                state_dir=home / name.replace(" ", "-"), metrics=MetricsSettings(enabled=enabled)
            )
            platforms[name] = await stack.enter_async_context(
                Platform.open(config, backend=ScriptedBackend())
            )
        order = list(platforms.items())
        for number in range(calls + 200):
            # Alternate who goes first: the second of a pair may find the disk warmer.
            for name, platform in order if number % 2 else order[::-1]:
                call = ToolCall(
                    id=f"b{number}",
                    name="files.read",
                    arguments={"path": "notes.txt"},
                    run_id=f"r{number % 8}",
                    principal="bench",
                )
                started = time.perf_counter()
                await platform.gateway.call(call)
                if number >= 200:  # warm-up calls are not counted
                    timings[name].append(time.perf_counter() - started)
    return timings


def instruments(calls: int) -> dict[str, list[float]]:
    def one_call(metrics: Metrics) -> Callable[[], None]:
        def update() -> None:
            metrics.policy_decisions.labels("allow", "files-read").inc()
            metrics.tool_calls.labels("files.read", "ok").inc()
            metrics.tool_call_duration.labels("files.read").observe(0.0004)
            metrics.tool_output_bytes.labels("files.read").observe(120)
            metrics.audit_records.labels("call").inc()

        return update

    timings: dict[str, list[float]] = {}
    for name, metrics in (
        ("instruments, on", Metrics()),
        ("instruments, off", Metrics(enabled=False)),
    ):
        update = one_call(metrics)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            update()
            samples.append(time.perf_counter() - started)
        timings[name] = samples
    return timings


def json_log_line(calls: int) -> list[float]:
    """The gateway's per-call log line, written as JSON (to memory: the disk is not measured)."""
    configure_logging("json", stream=io.StringIO())
    log = logging.getLogger("orchestrator.gateway._gateway")
    fields = {
        "run_id": "run-1",
        "call_id": "call-1",
        "principal": "bench",
        "tool": "files.read",
        "decision": "allow",
        "rule": "files-read",
        "status": "ok",
        "duration_s": 0.0004,
        "retries": 0,
        "profile": "default",
    }
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        log.info("call %s (%s): %s", "call-1", "files.read", "ok", extra=fields)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stockade-metrics-bench-") as home:
        timings = asyncio.run(gateway_calls(args.calls, Path(home)))
        timings.update(instruments(args.calls * 10))
        timings["JSON log line per call (logging.format: json)"] = json_log_line(args.calls * 10)
    print("| path | calls | p50 µs | p99 µs |")
    print("|---|---|---|---|")
    for name, samples in timings.items():
        print(summary(name, samples))
    on = statistics.median(timings["metrics on"])
    off = statistics.median(timings["metrics off"])
    print(f"\ngateway p50 difference, on - off: {(on - off) * 1e6:+.1f} µs")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

"""Tracing's cost per tool call: on vs off, and off vs a gateway without the tracing hook.

Three gateways over one scripted sandbox backend (it answers at once, so what
is measured is the gateway's own path), built alike (the python toolkit, an
allow-all policy with one rate limit, an audit log without ``fsync`` and
without group commit so the disk and thread hops do not drown microseconds):

- ``untraced build``: the gateway module as it would be without any tracing
  code: the current ``orchestrator/gateway/_gateway.py`` with its tracing hook
  (the ``tracer`` property and its type-only import) cut out of the source
  and loaded as a module of its own;
- ``tracing off``: :class:`~orchestrator.gateway.Gateway` as the platform
  builds it when ``tracing.enabled`` is false;
- ``tracing on``: :class:`~orchestrator.tracing._gateway.TracedGateway` with
  the real SDK: spans (``execute_tool`` and the step spans) go through the
  ``BatchSpanProcessor`` to an **in-memory exporter** (the SDK's
  ``InMemorySpanExporter``, cleared between rounds), under an open
  ``invoke_agent`` span as in a run; sampling ratio 1, content not captured.

The backends of ``tracing off`` and ``tracing on`` report the container in hand
(:func:`~orchestrator.sandbox.execution.container_acquired`) as the Docker
backend does, so tracing on makes its acquire and execute spans and tracing off
pays the report's check; the untraced build's backend, the same subclass
without that line, does not report.

They run in interleaved rounds (``--rounds`` of ``--calls`` calls each, the
order rotating per round) so that drift of a shared machine hits all three
alike. Reported: per-call p50 and p95 over all rounds, and the median over
rounds of each round's p50 difference (on - off: the issue's target is at most
100 µs; off - untraced build: at most 1 µs).

Run: ``.venv/bin/python benchmarks/tracing_bench.py [--rounds 30] [--calls 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _bench import percentiles, stop_on_sigterm
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import orchestrator.gateway._gateway as gateway_module
from orchestrator.approvals import ApprovalStore
from orchestrator.audit import AuditLog
from orchestrator.config import TracingSettings, builtin_profiles
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import parse_policy
from orchestrator.sandbox import ExecRequest, ExecResult, SandboxProfile
from orchestrator.sandbox.execution import container_acquired
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry
from orchestrator.tracing._gateway import TracedGateway
from orchestrator.tracing._tracer import RunTracer

POLICY = (
    "version: 1\ndefault: deny\nrules:\n  - {name: all, tools: '*', decision: allow}\n"
    "rate_limits:\n"
    "  - {name: per-run, tools: '*', scope: run, rate: 1000000, per_s: 1, burst: 1000000}\n"
)
_HOOK = re.compile(
    r"\nif TYPE_CHECKING:\n    from orchestrator\.tracing import RunTracer\n"
    r"|    @property\n    def tracer\(self\).*?return None\n\n",
    re.DOTALL,
)


def untraced_module() -> ModuleType:
    """The gateway module's current source without its tracing hook, as its own module."""
    source = Path(gateway_module.__file__).read_text()
    cut, removed = _HOOK.subn("", source)
    assert removed == 2, f"the tracing hook was not found in the gateway ({removed} of 2 parts)"
    assert "tracer" not in cut.replace("Tracer", ""), "tracing code left in the untraced copy"
    spec = importlib.util.spec_from_loader("orchestrator.gateway._gateway_untraced", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(cut, "<gateway without tracing>", "exec"), module.__dict__)
    return module


def call(number: int) -> ToolCall:
    return ToolCall(
        id=f"call-{number}",
        name="python.run",
        arguments=json.dumps({"code": "print(1)"}),
        run_id="run-bench",
        principal="bench",
    )


class ReportingBackend(ScriptedBackend):
    """The scripted backend, reporting the container in hand as the Docker backend does."""

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        container_acquired(False)
        return await super().execute(request, profile)


class SilentBackend(ScriptedBackend):
    """The same, without the report: what the untraced build's backend would be (the same
    frames, so the two differ by the report's line only)."""

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        return await super().execute(request, profile)


def build(kind: type[Gateway], home: Path, name: str, **extra: Any) -> Gateway:
    policy = parse_policy(POLICY)
    registry = ToolRegistry()
    registry.load("toolkits.python")
    backend = SilentBackend() if name == "untraced" else ReportingBackend()
    executor = ToolExecutor(registry, backend, profiles=builtin_profiles("runc").values())
    return kind(
        executor,
        policy,
        AuditLog(home / f"{name}.jsonl", fsync=False, group_commit=False),
        approvals=ApprovalGate(ApprovalStore(home / f"{name}.db")),
        metrics=Metrics(),
        **extra,
    )


async def one_round(gateway: Gateway, calls: int, start: int) -> list[float]:
    samples = []
    for number in range(start, start + calls):
        began = time.perf_counter()
        result = await gateway.call(call(number))
        samples.append(time.perf_counter() - began)
        assert result.status.value == "ok", result
    return samples


async def main(rounds: int, calls: int) -> None:
    load_at_start = os.getloadavg()[0]
    exporter = InMemorySpanExporter()
    tracer = RunTracer(TracingSettings(enabled=True), exporter=exporter)
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as folder:
        home = Path(folder)
        untraced_gateway: type[Gateway] = untraced_module().Gateway
        gateways: dict[str, Gateway] = {
            "untraced build": build(untraced_gateway, home, "untraced"),
            "tracing off": build(Gateway, home, "off"),
            "tracing on": build(TracedGateway, home, "on", tracer=tracer),
        }
        assert type(gateways["tracing off"]) is Gateway
        names = list(gateways)
        # Warm-up: imports, caches, the first audit writes.
        for name in names:
            await one_round(gateways[name], 200, 0)
        tracer.force_flush()
        exporter.clear()
        samples: dict[str, list[float]] = {name: [] for name in names}
        per_round: dict[str, list[float]] = {name: [] for name in names}
        exported = 0
        with tracer.run(
            run_id="run-bench", agent="bench", model="m", goal="", principal="bench", resumed=False
        ):
            for index in range(rounds):
                order = names[index % 3 :] + names[: index % 3]
                for name in order:
                    got = await one_round(gateways[name], calls, (index + 1) * calls)
                    samples[name] += got
                    per_round[name].append(percentiles(got, scale=1e6, shares=(0.5,))[0])
                tracer.force_flush()
                exported += len(exporter.get_finished_spans())
                exporter.clear()
    tracer.shutdown()

    print(f"# {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {load_at_start:.2f} at the start; "
          f"{rounds} rounds x {calls} calls per gateway")  # fmt: skip
    print(f"spans exported while tracing on: {exported} "
          f"({exported / (rounds * calls):.1f} per call)")  # fmt: skip
    print("| gateway | p50 µs | p95 µs |")
    print("|---|---:|---:|")
    for name in names:
        p50, p95 = percentiles(samples[name], scale=1e6, shares=(0.5, 0.95))
        print(f"| {name} | {p50:.1f} | {p95:.1f} |")
    on_off = statistics.median(
        a - b for a, b in zip(per_round["tracing on"], per_round["tracing off"], strict=True)
    )
    off_build = statistics.median(
        a - b for a, b in zip(per_round["tracing off"], per_round["untraced build"], strict=True)
    )
    print(f"tracing on - off, median of per-round p50 differences: {on_off:.1f} µs per call")
    print(f"tracing off - untraced build, same: {off_build:+.2f} µs per call")
    print(f"# load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))

"""Orchestrator overhead per agent iteration, model and tool time excluded.

One iteration is one model turn asking for one tool call, the call through
the gateway, and the loop's own work around them: the conversation, the
events and the execution log, the checkpoint of the run's state, the model
budget (SQLite, as the platform assembles it), loop detection and the
context check. Measured on the assembled platform:

- the model is the scripted OpenAI-compatible server on 127.0.0.1, in a
  process of its own (so its work never holds this process's GIL),
  answering at once; each ``complete`` call (HTTP round trip, the SDK,
  parsing) is timed and subtracted;
- the sandbox is the scripted backend (``Platform.open(config,
  backend=ScriptedBackend())``); each ``Gateway.call`` (policy, rate limits,
  the audit record with its ``fsync``) is timed and subtracted too;
- what is left, per iteration, is the orchestrator's overhead: the time
  from one model call's start to the next's, minus that model call and
  that iteration's tool call.

Runs of ``--iterations`` turns each (the conversation grows along a run);
reflection off, memory off (they cost per run, not per iteration). Two
platforms side by side, their runs alternating: ``--compare metrics``
(default) metrics on and off; ``--compare checkpoint`` the run's checkpoints
in ``runs.db`` on (the default: one transaction per step, new messages
appended, the step naming a call committed before the call) and off
(``AgentConfig(checkpoint=False)``), both with metrics on and a policy that
lets runs of 100 turns through (:data:`LONG_RUN_POLICY`). Reported: p50,
p95, p99 of the overhead, and of the subtracted model and tool times for
scale; with ``--compare checkpoint``, also the overhead of the last ten
iterations of each run and of the last one alone (iteration 100 of a run of
``--iterations 100``).

Run: ``.venv/bin/python benchmarks/agent_bench.py [--runs 20] [--iterations 25]`` or
``.venv/bin/python benchmarks/agent_bench.py --compare checkpoint --runs 10 --iterations 100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import platform as host
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _bench import stop_on_sigterm

from orchestrator.agent import Agent, AgentConfig, DetectionSettings, ModelClient, ModelReply
from orchestrator.config import (
    LexicalEmbedderSettings,
    MemorySettings,
    MetricsSettings,
    ModelSettings,
    StockadeConfig,
)
from orchestrator.platform import Platform
from orchestrator.testing import (
    ChatRequest,
    Reply,
    ScriptedModelServer,
    text,
    tool_call,
    tool_calls,
)
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolResult


class TimedModel(ModelClient):
    """The model client, recording when each completion started and how long it took."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings, environ={})
        self.calls: list[tuple[float, float]] = []

    async def complete(self, *args: Any, **kwargs: Any) -> ModelReply:
        started = time.perf_counter()
        reply = await super().complete(*args, **kwargs)
        self.calls.append((started, time.perf_counter() - started))
        return reply


class TimedGateway:
    """The platform's gateway, recording when each call started and how long it took."""

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway
        self.calls: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)

    async def call(self, call: ToolCall, **options: Any) -> ToolResult:
        started = time.perf_counter()
        result: ToolResult = await self._gateway.call(call, **options)
        self.calls.append((started, time.perf_counter() - started))
        return result


def model_script(iterations: int) -> Any:
    """A model that asks for one call per turn (each different), then answers."""

    def answer(request: ChatRequest) -> Reply:
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        if turn < iterations:
            return tool_calls(tool_call("python__run", {"code": f"print({turn})"}))
        return text("done")

    return answer


def serve_model(iterations: int, address: Connection) -> None:
    """The scripted model in a process of its own: its work never holds the agent's GIL."""
    with ScriptedModelServer(handler=model_script(iterations)) as server:
        address.send(server.base_url)
        address.recv()  # until the benchmark is done


@contextlib.contextmanager
def model_process(iterations: int) -> Iterator[str]:
    """Start :func:`serve_model`; its base URL."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=serve_model, args=(iterations, theirs), daemon=True
    )
    process.start()
    try:
        yield str(ours.recv())
    finally:
        ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def overheads(
    model: Sequence[tuple[float, float]], tools: Sequence[tuple[float, float]]
) -> tuple[list[float], list[float], list[float]]:
    """Per iteration: overhead, model time, tool time (seconds)."""
    result: tuple[list[float], list[float], list[float]] = ([], [], [])
    for (start, model_s), (following, _) in itertools.pairwise(model):
        tool_s = sum(d for s, d in tools if start <= s < following)
        result[0].append(following - start - model_s - tool_s)
        result[1].append(model_s)
        result[2].append(tool_s)
    return result


def quantiles_ms(samples: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3

    return pick(0.5), pick(0.95), pick(0.99), statistics.fmean(ordered) * 1e3


@dataclasses.dataclass
class Subject:
    """One platform and agent under measurement, and what it measured."""

    name: str
    gateway: TimedGateway
    model: TimedModel
    agent: Agent
    samples: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"overhead": [], "model": [], "tool": [], "last10": [], "last": []}
    )

    async def one_run(self, number: int, iterations: int, *, keep: bool) -> None:
        self.model.calls.clear()
        self.gateway.calls.clear()
        result = await self.agent.run("count", run_id=f"{self.name}-{number}")
        assert result.success and result.iterations == iterations + 1, result
        if keep:
            overhead, model_s, tool_s = overheads(self.model.calls, self.gateway.calls)
            self.samples["overhead"] += overhead
            self.samples["model"] += model_s
            self.samples["tool"] += tool_s
            # The overhead after the run's last tool call: its iteration ``iterations``.
            self.samples["last10"] += overhead[-10:]
            self.samples["last"] += overhead[-1:]


SUBJECTS = {
    "metrics": (("metrics-on", True, True), ("metrics-off", False, True)),
    "checkpoint": (("checkpoint-on", True, True), ("checkpoint-off", True, False)),
}
"""Per comparison: each subject's name, metrics enabled, checkpoints on."""

LONG_RUN_POLICY = """\
version: 1
default: deny
rules:
  - {name: python, tools: python.run, decision: allow}
model_limits:
  max_tokens_per_run: 100000000
  max_model_calls_per_run: 10000
"""
"""For runs of 100 turns: the shipped policy's per-run rate limit (bursts of 20) and model
call limit (100) would stop them; the model budget is still drawn on every call."""


async def bench(
    runs: int, iterations: int, compare: str = "metrics"
) -> dict[str, dict[str, list[float]]]:
    """``runs`` runs on each of two platforms (see :data:`SUBJECTS`), alternating."""
    with (
        tempfile.TemporaryDirectory(prefix="agent-bench-") as home,
        model_process(iterations) as base_url,
    ):
        settings = ModelSettings(base_url=base_url, name="bench", timeout_s=30)
        base_config = AgentConfig(
            reflection=False,
            max_iterations=iterations + 1,
            context_budget_tokens=10_000_000,
            # The scripted tool answers the same each time: no loop for this benchmark.
            detection=DetectionSettings(no_progress_turns=0),
        )
        async with contextlib.AsyncExitStack() as stack:
            subjects = []
            policy = None
            if compare == "checkpoint":
                policy = Path(home) / "long-runs.yaml"
                policy.write_text(LONG_RUN_POLICY)
            for name, enabled, checkpoint in SUBJECTS[compare]:
                agent_config = base_config.model_copy(update={"checkpoint": checkpoint})
                config = StockadeConfig(
                    state_dir=Path(home) / name,
                    toolkits=("toolkits.python",),
                    model=settings,
                    memory=MemorySettings(enabled=False, embedder=LexicalEmbedderSettings()),
                    metrics=MetricsSettings(enabled=enabled),
                    policy=policy,
                )
                opened = await stack.enter_async_context(
                    Platform.open(config, backend=ScriptedBackend())
                )
                gateway = TimedGateway(opened.gateway)
                timed = dataclasses.replace(opened, gateway=gateway)  # type: ignore[arg-type]
                model = TimedModel(settings)
                stack.push_async_callback(model.close)
                agent = Agent(timed, agent_config, model=model)
                stack.push_async_callback(agent.close)
                subjects.append(Subject(name=name, gateway=gateway, model=model, agent=agent))
            for number in range(runs + 1):
                # The first run of each is a warm-up: imports, connections, SQLite files.
                order = subjects if number % 2 else subjects[::-1]
                for subject in order:
                    await subject.one_run(number, iterations, keep=number > 0)
    return {subject.name: subject.samples for subject in subjects}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--compare", choices=sorted(SUBJECTS), default="metrics")
    options = parser.parse_args()
    started = time.time()
    samples = asyncio.run(bench(options.runs, options.iterations, options.compare))
    load = os.getloadavg()
    print(
        f"{host.python_implementation()} {host.python_version()}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {options.runs} runs x "
        f"{options.iterations} iterations ({time.time() - started:.0f} s)"
    )
    print(f"{'per iteration':<48} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    names = {
        "overhead": "orchestrator overhead (the result)",
        "model": "model call (subtracted)",
        "tool": "tool call via gateway (subtracted)",
    }
    if options.compare == "checkpoint":
        names["last10"] = f"overhead, iterations {options.iterations - 9}-{options.iterations}"
        names["last"] = f"overhead, iteration {options.iterations}"
    for subject, measured in samples.items():
        for key, label in names.items():
            p50, p95, p99, mean = quantiles_ms(measured[key])
            row = f"{label}, {subject}"
            print(f"{row:<48} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f} {mean:>8.3f}")
    if options.compare == "checkpoint":
        p50 = quantiles_ms(samples["checkpoint-on"]["last10"])[0]
        verdict = "met" if p50 <= 3 else "NOT met"
        print(
            f"target p50 <= 3 ms at iteration ~{options.iterations} (checkpoints on): "
            f"{verdict} ({p50:.3f} ms)"
        )
        return
    p50 = quantiles_ms(samples["metrics-on"]["overhead"])[0]
    print(f"target p50 <= 2 ms (metrics on): {'met' if p50 <= 2 else 'NOT met'} ({p50:.3f} ms)")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

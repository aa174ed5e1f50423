"""The metric definitions: names, labels, buckets, series at zero, metrics off, the agent adapter."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from orchestrator.agent import Agent, AgentConfig, RunStatus
from orchestrator.config import MetricsSettings, ModelSettings, StockadeConfig
from orchestrator.metrics import Metrics, genai, render
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, rate_limited, server_error, text
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolStatus

from .conftest import METRIC_NAME

# Labels whose values are identifiers: never allowed (they would grow without bound).
_UNBOUNDED = {"run_id", "call_id", "principal", "container_id", "request_id", "run", "call"}


def test_names_follow_prometheus_conventions() -> None:
    families = list(Metrics().registry.collect())
    assert len(families) > 25
    for family in families:
        assert METRIC_NAME.match(family.name), family.name
        assert family.name.startswith(("stockade_", "gen_ai_")), family.name
        assert family.documentation, family.name
        if family.type == "histogram":
            unitless = {genai.TOKEN_USAGE, "stockade_agent_run_iterations"}
            assert family.name.endswith(("_seconds", "_bytes")) or family.name in unitless
        for sample in family.samples:
            assert not set(sample.labels) & _UNBOUNDED, (family.name, sample.labels)


def test_every_histogram_has_its_own_explicit_buckets() -> None:
    metrics = Metrics()
    default = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
    for family in metrics.registry.collect():
        if family.type != "histogram":
            continue
        edges = sorted(
            {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
        )
        assert tuple(edges[:-1]) != default, f"{family.name} uses the client's default buckets"
    assert metrics.tool_call_duration._upper_bounds[0] < 0.001  # sub-millisecond refusals
    assert metrics.agent.operation_duration._upper_bounds[:-1] == list(genai.DURATION_BUCKETS)
    assert metrics.agent.token_usage._upper_bounds[:-1] == list(genai.TOKEN_USAGE_BUCKETS)


async def test_the_platform_creates_every_series_at_zero(tmp_path: Path) -> None:
    config = StockadeConfig(state_dir=tmp_path, model=ModelSettings(name="m1"))
    async with Platform.open(config, backend=ScriptedBackend()) as platform:
        m = platform.metrics
        registered = [spec.name for spec in platform.registry.tools()]
        for name in registered:
            for status in ToolStatus:
                sample = m.registry.get_sample_value(
                    "stockade_tool_calls_total", {"tool": name, "status": status.value}
                )
                assert sample == 0.0, (name, status)
        rules = [rule.name for rule in platform.gateway.policy.rules]
        assert rules
        for rule in platform.gateway.policy.rules:
            labels = {"decision": rule.decision.value, "rule": rule.name}
            assert m.registry.get_sample_value("stockade_policy_decisions_total", labels) == 0
        for outcome in ("approved", "denied", "expired"):
            assert (
                m.registry.get_sample_value("stockade_approvals_total", {"outcome": outcome}) == 0
            )
        for outcome in ("complete", "failed", "cancelled"):
            assert (
                m.registry.get_sample_value("stockade_agent_runs_total", {"outcome": outcome}) == 0
            )
        pool = {"profile": "default", "state": "ready"}
        assert m.registry.get_sample_value("stockade_sandbox_pool_size", pool) == 0
        assert (
            m.registry.get_sample_value("stockade_sandbox_oom_kills_total", {"profile": "http"})
            == 0
        )
        token = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openai",
            "gen_ai_request_model": "m1",
            "gen_ai_token_type": "input",
        }
        assert m.registry.get_sample_value("gen_ai_client_token_usage_count", token) == 0
        assert m.registry.get_sample_value("stockade_audit_write_failures_total") == 0
        assert m.registry.get_sample_value("stockade_approvals_pending") == 0
        build = {"version": "0.1.0"}
        assert any(
            s.labels.items() >= build.items()
            for f in m.registry.collect()
            if f.name == "stockade_build_info"
            for s in f.samples
        )


async def test_a_tool_name_the_model_invented_never_becomes_a_label(tmp_path: Path) -> None:
    async with Platform.open(StockadeConfig(state_dir=tmp_path), backend=ScriptedBackend()) as p:
        for number in range(3):
            await p.gateway.call(ToolCall(id=f"c{number}", name=f"made.up{number}", arguments={}))
        body = render(p.metrics)[0].decode()
    assert "made.up" not in body
    assert p.metrics.sample("stockade_tool_calls_total", tool="unknown", status="unknown_tool") == 3


async def test_metrics_off_records_nothing_and_registers_nothing(tmp_path: Path) -> None:
    config = StockadeConfig(state_dir=tmp_path, metrics=MetricsSettings(enabled=False))
    async with Platform.open(config, backend=ScriptedBackend()) as platform:
        result = await platform.gateway.call(
            ToolCall(id="c1", name="files.read", arguments={"path": "a"}, run_id="r")
        )
        assert result.status is ToolStatus.OK
        assert not platform.metrics.enabled
        assert list(platform.metrics.registry.collect()) == []
        assert render(platform.metrics)[0] == b""


def test_metrics_off_are_one_object_that_records_nothing() -> None:
    # What a disabled instrument costs a call is a method call that returns:
    # every instrument is the same object, its labels() is itself (no child,
    # no lock, no per-label state) and its updates do nothing. (Shown by
    # structure, not by a clock: a per-update time bound failed on a slower CPU.)
    off = Metrics(enabled=False)
    instruments = [value for value in vars(off).values() if hasattr(value, "labels")]
    assert len(instruments) > 10
    assert all(instrument is instruments[0] for instrument in instruments)
    assert off.tool_calls.labels("python.run", "ok") is off.tool_calls
    for _ in range(3):
        off.tool_calls.labels("python.run", "ok").inc()
        off.tool_call_duration.labels("python.run").observe(0.01)
    assert vars(instruments[0]) == {}
    assert list(off.registry.collect()) == []


def _run_events(run_id: str, outcome: str) -> list[SimpleNamespace]:
    at = {"run_id": run_id, "at": 0.0}
    usage = SimpleNamespace(prompt_tokens=100, completion_tokens=10)
    return [
        SimpleNamespace(type="run_started", model="m1", **at),
        SimpleNamespace(type="model_turn", usage=usage, duration_s=0.3, attempts=2, **at),
        SimpleNamespace(
            type="tool_call_finished", tool="python.run", status="ok", duration_s=0.02, **at
        ),
        SimpleNamespace(
            type="tool_call_finished", tool="invented.x", status="unknown_tool", duration_s=0, **at
        ),
        SimpleNamespace(type="tool_call_finished", tool="shell.run", status="skipped", **at),
        SimpleNamespace(type="intervention", pattern="repeated_call", **at),
        SimpleNamespace(type="notice", message="nothing to count", **at),
        SimpleNamespace(type="run_finished", status=outcome, iterations=3, duration_s=4.0, **at),
    ]


def test_agent_events_become_stockade_and_genai_metrics() -> None:
    metrics = Metrics()
    agent = metrics.agent
    agent.declare_model("m1", provider="vllm")
    agent.declare_tools(["python.run", "shell.run"])
    for event in _run_events("r1", "complete") + _run_events("r2", "failed"):
        agent.observe(event)
    agent.model_retried("model_rate_limited")
    agent.model_failed(model="m1", reason="model_unavailable", duration_s=2.0, attempts=3)
    s = metrics.sample
    assert s("stockade_agent_runs_total", outcome="complete") == 1
    assert s("stockade_agent_runs_total", outcome="failed") == 1
    assert s("stockade_agent_runs_in_progress") == 0
    assert s("stockade_agent_run_iterations_sum") == 6
    assert s("stockade_agent_interventions_total", pattern="repeated_call") == 2
    chat = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "vllm",
        "gen_ai_request_model": "m1",
    }
    assert s("gen_ai_client_token_usage_sum", **chat, gen_ai_token_type="input") == 200
    assert s("gen_ai_client_token_usage_sum", **chat, gen_ai_token_type="output") == 20
    assert s("gen_ai_client_operation_duration_seconds_count", **chat, error_type="") == 2
    failed = s(
        "gen_ai_client_operation_duration_seconds_count", **chat, error_type="model_unavailable"
    )
    assert failed == 1
    assert s("stockade_model_errors_total", reason="model_unavailable") == 1
    retried = {"operation": "model_request", "reason": "model_rate_limited"}
    assert s("stockade_retries_total", **retried) == 1
    assert s("stockade_retries_exhausted_total", operation="model_request") == 1
    tool = {"gen_ai_operation_name": "execute_tool", "gen_ai_tool_name": "python.run"}
    assert s("gen_ai_execute_tool_duration_seconds_count", **tool, error_type="") == 2
    unknown = {"gen_ai_operation_name": "execute_tool", "gen_ai_tool_name": "unknown"}
    assert (
        s("gen_ai_execute_tool_duration_seconds_count", **unknown, error_type="unknown_tool") == 2
    )
    invoke = {
        "gen_ai_operation_name": "invoke_agent",
        "gen_ai_provider_name": "vllm",
        "gen_ai_request_model": "m1",
    }
    assert s("gen_ai_invoke_agent_duration_seconds_count", **invoke, error_type="") == 1
    assert s("gen_ai_invoke_agent_duration_seconds_count", **invoke, error_type="failed") == 1
    body = render(metrics)[0].decode()
    assert "invented.x" not in body and "r1" not in body


def test_genai_names_are_spelt_in_one_module_only() -> None:
    root = Path(__file__).resolve().parents[2] / "orchestrator"
    spelt = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if "gen_ai_client_operation_duration" in path.read_text()
    ]
    assert spelt == ["metrics/genai.py"]


async def test_a_retried_model_request_is_counted_once_per_retry_by_reason(tmp_path: Path) -> None:
    """The agent's own model client reports its retries: one per attempt after the first,
    labelled with the failed attempt's error code, whether the request then succeeds or not."""
    async with ScriptedModelServer() as server:
        server.inject(rate_limited(retry_after_s=0), server_error(), server_error(), server_error())
        server.extend(text("Fine."))
        config = StockadeConfig(
            state_dir=tmp_path,
            model=ModelSettings(
                base_url=server.base_url,
                name="m1",
                max_attempts=3,
                backoff_initial_s=0.01,
                backoff_max_s=0.02,
            ),
        )
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, AgentConfig(reflection=False, memory=False)) as agent,
        ):
            failed = await agent.run("Answer.")  # 429, 500, 500: spent
            done = await agent.run("Answer.")  # 500, then an answer
    assert failed.status is RunStatus.FAILED and done.success
    s = platform.metrics.sample
    retried = {"operation": "model_request"}
    assert s("stockade_retries_total", **retried, reason="model_rate_limited") == 1
    assert s("stockade_retries_total", **retried, reason="model_unavailable") == 2
    assert s("stockade_retries_exhausted_total", operation="model_request") == 1

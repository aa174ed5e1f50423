"""The Stockade overview dashboard, as typed code (grafana-foundation-sdk, Grafana 11.6 build).

Run ``python deploy/grafana/dashboard.py`` to regenerate
``deploy/grafana/dashboards/stockade-overview.json`` (a test checks the file
is in step with this code). Every query filters on the ``job`` and
``instance`` variables and aggregates over processes, since each serving
Stockade process is its own scrape target; rates use ``$__rate_interval``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

__all__ = ["OUTPUT", "build", "model", "render"]

OUTPUT = Path(__file__).parent / "dashboards" / "stockade-overview.json"
"""Where the generated dashboard is kept (and provisioned from)."""

UID = "stockade-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def sel(metric: str, matchers: str = "") -> str:
    """``metric`` restricted to the chosen jobs and instances (and ``matchers``)."""
    extra = f", {matchers}" if matchers else ""
    return f'{metric}{{job=~"$job", instance=~"$instance"{extra}}}'


def rate(metric: str, matchers: str = "") -> str:
    """Per-second rate of a counter over Grafana's rate interval."""
    return f"rate({sel(metric, matchers)}[{RATE}])"


def quantile(q: float, histogram: str, by: str = "", matchers: str = "") -> str:
    """The ``q`` quantile of a histogram, over every process (and per ``by`` labels)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(histogram + '_bucket', matchers)}))"


def query(expr: str, legend: str) -> prometheus.Dataquery:
    """A Prometheus query with its legend."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def series(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel of ``queries``."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .min(0)
        .datasource(DATASOURCE)
        .height(8)
        .span(8)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for ref, target in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(target.ref_id(ref))
    return panel


def single(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    """A single-number panel."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(6)
        .graph_mode(common.BigValueGraphMode.AREA)
        .with_target(query(expr, title).ref_id("A"))
    )


def _variables(board: dashboard.Dashboard) -> dashboard.Dashboard:
    everything = VariableOption(selected=True, text="All", value="$__all")
    return (
        board.with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("job")
            .label("Job")
            .query("label_values(stockade_build_info, job)")
            .datasource(DATASOURCE)
            .current(everything)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .query('label_values(stockade_build_info{job=~"$job"}, instance)')
            .datasource(DATASOURCE)
            .current(everything)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
        )
    )


def _overview(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Overview"))
        .with_panel(
            single(
                "Tool calls",
                "Tool calls through the gateway per second, every outcome.",
                "reqps",
                f"sum({rate('stockade_tool_calls_total')})",
            )
        )
        .with_panel(
            single(
                "Runs in progress",
                "Agent runs started and not yet ended.",
                "short",
                f"sum({sel('stockade_agent_runs_in_progress')})",
            )
        )
        .with_panel(
            single(
                "Approvals pending",
                "Tool calls waiting for a person's decision right now.",
                "short",
                f"sum({sel('stockade_approvals_pending')})",
            )
        )
        .with_panel(
            single(
                "Audit write failures",
                "Audit records that could not be written per second; above 0 the gateway "
                "refuses every call.",
                "short",
                f"sum({rate('stockade_audit_write_failures_total')})",
            )
        )
    )


def _runs(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Agent runs and model"))
        .with_panel(
            series(
                "Runs by outcome",
                "Agent runs that ended per second, by outcome.",
                "ops",
                query(f"sum by (outcome) ({rate('stockade_agent_runs_total')})", "{{outcome}}"),
            )
        )
        .with_panel(
            series(
                "Run duration",
                "Wall-clock time of agent runs (p50, p95).",
                "s",
                query(quantile(0.5, "stockade_agent_run_duration_seconds"), "p50"),
                query(quantile(0.95, "stockade_agent_run_duration_seconds"), "p95"),
            )
        )
        .with_panel(
            series(
                "Token usage",
                "Tokens per second sent to and written by the model (GenAI token usage).",
                "short",
                query(
                    f"sum by (gen_ai_token_type) ({rate('gen_ai_client_token_usage_sum')})",
                    "{{gen_ai_token_type}}",
                ),
            )
        )
        .with_panel(
            series(
                "Model errors by reason",
                "Model requests that failed for good per second, by reason; and retries.",
                "ops",
                query(f"sum by (reason) ({rate('stockade_model_errors_total')})", "{{reason}}"),
                query(
                    "sum(" + rate("stockade_retries_total", 'operation="model_request"') + ")",
                    "retries",
                ),
            )
        )
        .with_panel(
            series(
                "Model request latency",
                "Duration of model requests, retries included (GenAI operation duration, p50 "
                "and p95).",
                "s",
                query(quantile(0.5, "gen_ai_client_operation_duration_seconds"), "p50"),
                query(quantile(0.95, "gen_ai_client_operation_duration_seconds"), "p95"),
            )
        )
        .with_panel(
            series(
                "Iterations per run",
                "Model turns per agent run (p50, p95).",
                "short",
                query(quantile(0.5, "stockade_agent_run_iterations"), "p50"),
                query(quantile(0.95, "stockade_agent_run_iterations"), "p95"),
            )
        )
    )


def _tool_calls(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Tool calls and policy"))
        .with_panel(
            series(
                "Tool calls by status",
                "Tool calls through the gateway per second, by final status.",
                "reqps",
                query(f"sum by (status) ({rate('stockade_tool_calls_total')})", "{{status}}"),
            )
        )
        .with_panel(
            series(
                "Tool call latency",
                "Wall-clock time of tool calls through the gateway, approval waits included.",
                "s",
                query(quantile(0.5, "stockade_tool_call_duration_seconds"), "p50"),
                query(quantile(0.95, "stockade_tool_call_duration_seconds"), "p95"),
                query(quantile(0.99, "stockade_tool_call_duration_seconds"), "p99"),
            )
        )
        .with_panel(
            series(
                "Policy decisions",
                "Policy decisions per second (one per tool call), by decision.",
                "ops",
                query(
                    f"sum by (decision) ({rate('stockade_policy_decisions_total')})",
                    "{{decision}}",
                ),
            )
        )
        .with_panel(
            series(
                "Denials by rule",
                "Calls the policy denied per second, by the rule that denied (empty: the default).",
                "ops",
                query(
                    "sum by (rule) ("
                    + rate("stockade_policy_decisions_total", 'decision="deny"')
                    + ")",
                    "{{rule}}",
                ),
            )
        )
        .with_panel(
            series(
                "Rate-limit refusals",
                "Calls refused by a rate limit per second, by limit.",
                "ops",
                query(f"sum by (limit) ({rate('stockade_rate_limited_total')})", "{{limit}}"),
            )
        )
        .with_panel(
            series(
                "Retries",
                "Attempts after the first per second, by operation and reason; and operations "
                "that ran out of attempts.",
                "ops",
                query(
                    f"sum by (operation, reason) ({rate('stockade_retries_total')})",
                    "{{operation}} {{reason}}",
                ),
                query(
                    f"sum by (operation) ({rate('stockade_retries_exhausted_total')})",
                    "{{operation}} exhausted",
                ),
            )
        )
    )


def _approvals(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Approvals"))
        .with_panel(
            series(
                "Pending approvals",
                "Calls waiting for a decision now.",
                "short",
                query(f"sum({sel('stockade_approvals_pending')})", "pending"),
            )
        )
        .with_panel(
            series(
                "Approval wait",
                "How long calls waited for a decision (p50, p95), and the longest wait of a "
                "call still waiting.",
                "s",
                query(quantile(0.5, "stockade_approval_wait_seconds"), "p50"),
                query(quantile(0.95, "stockade_approval_wait_seconds"), "p95"),
                query(f"max({sel('stockade_approval_oldest_pending_seconds')})", "oldest pending"),
            )
        )
        .with_panel(
            series(
                "Approvals by outcome",
                "Approval requests that ended per second, by outcome.",
                "ops",
                query(f"sum by (outcome) ({rate('stockade_approvals_total')})", "{{outcome}}"),
            )
        )
    )


def _sandbox(board: dashboard.Dashboard) -> dashboard.Dashboard:
    misses = f"sum by (profile) ({rate('stockade_sandbox_pool_misses_total')})"
    taken = f"sum by (profile) ({rate('stockade_sandbox_pool_acquisitions_total')})"
    return (
        board.with_row(dashboard.Row("Sandboxes"))
        .with_panel(
            series(
                "Warm pool",
                "Containers in the warm pools by profile and state, against each pool's target.",
                "short",
                query(
                    f"sum by (profile, state) ({sel('stockade_sandbox_pool_size')})",
                    "{{profile}} {{state}}",
                ),
                query(
                    f"sum by (profile) ({sel('stockade_sandbox_pool_target_size')})",
                    "{{profile}} target",
                ),
            )
        )
        .with_panel(
            series(
                "Pool misses",
                "Share of calls that found their pool empty and waited for a cold container.",
                "percentunit",
                query(f"{misses} / {taken}", "{{profile}}"),
            )
        )
        .with_panel(
            series(
                "OOM kills and timeouts",
                "Sandboxes killed for memory or at their deadline per second, by profile.",
                "ops",
                query(
                    f"sum by (profile) ({rate('stockade_sandbox_oom_kills_total')})",
                    "{{profile}} OOM",
                ),
                query(
                    f"sum by (profile) ({rate('stockade_sandbox_timeouts_total')})",
                    "{{profile}} timeout",
                ),
            )
        )
        .with_panel(
            series(
                "Sandbox operations",
                "Engine operations (create, start, remove) and calls' exchanges with their "
                "container (exec), p95 by runtime.",
                "s",
                query(
                    quantile(
                        0.95, "stockade_sandbox_operation_duration_seconds", "operation, runtime"
                    ),
                    "{{operation}} {{runtime}}",
                ),
            )
        )
        .with_panel(
            series(
                "Sandbox executions",
                "Calls run in sandboxes per second, by outcome.",
                "ops",
                query(
                    f"sum by (status) ({rate('stockade_sandbox_executions_total')})",
                    "{{status}}",
                ),
            )
        )
        .with_panel(
            series(
                "Egress connections",
                "Connections sandboxes tried through the egress proxy per second, by outcome; "
                "and leftover containers reaped.",
                "ops",
                query(
                    f"sum by (outcome) ({rate('stockade_egress_connections_total')})",
                    "{{outcome}}",
                ),
                query(f"sum({rate('stockade_sandbox_containers_reaped_total')})", "reaped"),
            )
        )
    )


def _hosts(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """Sandbox hosts of the ray engine, by the operator's host names (empty under docker)."""
    return (
        board.with_row(dashboard.Row("Sandbox hosts (Ray)"))
        .with_panel(
            series(
                "Hosts up and draining",
                "Sandbox hosts registered and answering (1) or lost or refused (0), and hosts "
                "drained with stockade hosts drain, as each orchestrator sees them.",
                "short",
                query(f"max by (host) ({sel('stockade_host_up')})", "{{host}} up"),
                query(f"max by (host) ({sel('stockade_host_draining')})", "{{host}} draining"),
            )
        )
        .with_panel(
            series(
                "Calls per host",
                "Calls the sandbox hosts answered per second, and calls running on them now.",
                "short",
                query(f"sum by (host) ({rate('stockade_host_calls_total')})", "{{host}} calls/s"),
                query(
                    f"sum by (host) ({sel('stockade_host_calls_in_flight')})",
                    "{{host}} in flight",
                ),
            )
        )
        .with_panel(
            series(
                "Dispatch to hosts",
                "What dispatching a call to a host adds (Ray round trip minus the host's own "
                "time), p50 and p99 by host.",
                "s",
                query(
                    quantile(0.5, "stockade_host_dispatch_duration_seconds", "host"),
                    "{{host}} p50",
                ),
                query(
                    quantile(0.99, "stockade_host_dispatch_duration_seconds", "host"),
                    "{{host}} p99",
                ),
            )
        )
        .with_panel(
            series(
                "Warm pools per host",
                "Warm containers ready on each host, by profile.",
                "short",
                query(
                    f"sum by (host, profile) ({sel('stockade_host_pool_ready')})",
                    "{{host}} {{profile}}",
                ),
            )
        )
    )


def build() -> dashboard.Dashboard:
    """The dashboard's builder."""
    board = (
        dashboard.Dashboard("Stockade")
        .uid(UID)
        .description("Agent runs, tool calls, policy, approvals and sandboxes of Stockade.")
        .tags(["stockade", "generated"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for section in (_variables, _overview, _runs, _tool_calls, _approvals, _sandbox, _hosts):
        board = section(board)
    return board


def model() -> Dashboard:
    """The dashboard, its panels (rows included) numbered 1, 2, … in order."""
    built = build().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built


def render() -> str:
    """The dashboard as Grafana reads it (JSON, stable key order)."""
    return JSONEncoder(sort_keys=True, indent=2).encode(model()) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")

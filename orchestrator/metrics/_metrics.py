"""Every Prometheus metric of the platform, defined once, in one registry per :class:`Metrics`.

The gateway's instruments live here; the sandbox layer's and the agent
loop's in :attr:`Metrics.sandbox` and :attr:`Metrics.agent`. Names follow
Prometheus' conventions: the ``stockade_`` prefix, base units as suffixes
(``_seconds``, ``_bytes``), ``_total`` on counters (added by the client).

Label values come only from bounded sets: tool names from the registry (a
name the model made up is counted as ``unknown``), rule and limit names from
the policy, profiles from the configuration, statuses, decisions and error
codes from enums. Run ids, call ids, principals and container ids never
become labels (they are in the structured logs and the audit log). Every
series a dashboard or an alert reads exists at zero from the start, so a
rate is 0 rather than missing.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator import __version__
from orchestrator.metrics._agent import UNKNOWN_TOOL_LABEL, AgentMetrics
from orchestrator.metrics._buckets import APPROVAL_WAIT_SECONDS, OUTPUT_BYTES, TOOL_CALL_SECONDS
from orchestrator.metrics._factory import InstrumentFactory
from orchestrator.metrics._hosts import HostMetrics
from orchestrator.metrics._sandbox import SandboxMetrics

__all__ = [
    "APPROVAL_OUTCOMES",
    "LIMIT_STORE_OUTCOMES",
    "RETRY_OPERATIONS",
    "UNKNOWN_TOOL_LABEL",
    "Metrics",
]

APPROVAL_OUTCOMES = ("approved", "denied", "expired")
"""How an approval request ends."""
LIMIT_STORE_OUTCOMES = ("denied", "admitted")
"""What a limit check did while its shared store was unreachable: fail closed, or open."""
RETRY_OPERATIONS = ("tool_call", "model_request")
"""What is retried: a tool call in a fresh sandbox, a request to the model server."""


class _WaitingApprovals(Collector):
    """Calls of this process waiting for an approval decision, read at scrape time."""

    def __init__(self) -> None:
        self.since: dict[int, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        yield GaugeMetricFamily(
            "stockade_approvals_pending",
            "Calls waiting for an approval decision right now.",
            value=len(self.since),
        )
        yield GaugeMetricFamily(
            "stockade_approval_oldest_pending_seconds",
            "How long the longest-waiting call has waited for an approval decision (0: none).",
            value=max((now - start for start in self.since.values()), default=0.0),
        )


class Metrics:
    """The platform's metrics, registered in ``registry`` (a fresh one by default).

    ``enabled=False`` makes every instrument do nothing and leaves the
    registry empty: the instrumented code runs unchanged at no measurable cost.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, enabled: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        """Where the metrics are registered; serve it to Prometheus."""
        self.enabled = enabled
        """Whether anything is recorded."""
        make = InstrumentFactory(self.registry, enabled=enabled)
        self.retries = make.counter(
            "stockade_retries",
            "Attempts after the first, by operation (tool_call, model_request) and the error "
            "code that caused them.",
            ["operation", "reason"],
        )
        self.retries_exhausted = make.counter(
            "stockade_retries_exhausted",
            "Operations that failed on their last allowed attempt, by operation.",
            ["operation"],
        )
        self.sandbox = SandboxMetrics(make)
        self.hosts = HostMetrics(make)
        """The sandbox layer's instruments."""
        self.agent = AgentMetrics(make, retries=self.retries, exhausted=self.retries_exhausted)
        """The agent loop's instruments (and the GenAI conventions' names)."""
        self.tool_calls = make.counter(
            "stockade_tool_calls",
            "Tool calls through the gateway, by tool and final status.",
            ["tool", "status"],
        )
        self.tool_call_duration = make.histogram(
            "stockade_tool_call_duration_seconds",
            "Wall-clock time of tool calls through the gateway, approval waits included.",
            ["tool"],
            buckets=TOOL_CALL_SECONDS,
        )
        self.artifacts = make.counter(
            "stockade_artifacts",
            "Artifacts kept from the files tool calls wrote under outputs/, by media type "
            "(decided from the bytes: a short allow-list, so the label is bounded).",
            ["media_type"],
        )
        self.artifact_bytes = make.counter(
            "stockade_artifact_bytes",
            "Bytes of the artifacts kept, by media type.",
            ["media_type"],
        )
        self.artifacts_dropped = make.counter(
            "stockade_artifacts_dropped",
            "Files under outputs/ not kept as artifacts (a cap, the run's quota, a bad name).",
        )
        self.tool_output_bytes = make.histogram(
            "stockade_tool_output_bytes",
            "Size of the output tool calls return to the caller.",
            ["tool"],
            buckets=OUTPUT_BYTES,
        )
        self.policy_decisions = make.counter(
            "stockade_policy_decisions",
            "Policy decisions, one per call (arguments an approver edited are decided again, "
            "not counted again), by decision and deciding rule (rule is empty for the default).",
            ["decision", "rule"],
        )
        self.rate_limited = make.counter(
            "stockade_rate_limited",
            "Calls refused by a rate limit, by the limit that refused.",
            ["limit"],
        )
        self.limit_store_unavailable = make.counter(
            "stockade_limit_store_unavailable",
            "Limit checks answered without a shared limit store that could not be reached "
            "(Redis), by outcome: denied (failing closed) or admitted (failing open).",
            ["outcome"],
        )
        self.approvals = make.counter(
            "stockade_approvals",
            "Approval requests that ended, by outcome (approved, denied, expired).",
            ["outcome"],
        )
        self.approval_wait = make.histogram(
            "stockade_approval_wait_seconds",
            "How long calls waited for an approval decision.",
            buckets=APPROVAL_WAIT_SECONDS,
        )
        self.audit_records = make.counter(
            "stockade_audit_records",
            "Audit records made durable, by event.",
            ["event"],
        )
        self.audit_write_failures = make.counter(
            "stockade_audit_write_failures",
            "Audit records that could not be written (the gateway then fails closed).",
        )
        self.audit_failing = make.gauge(
            "stockade_audit_failing",
            "1 while the gateway refuses calls because its last audit write failed; 0 once a "
            "record is written again.",
        )
        build = make.gauge(
            "stockade_build_info",
            "Always 1; the labels say which Stockade and Python this process runs.",
            ["version", "python_version"],
        )
        build.labels(__version__, platform.python_version()).set(1)
        self._waiting = _WaitingApprovals()
        if enabled:
            self.registry.register(self._waiting)
        for outcome in APPROVAL_OUTCOMES:
            self.approvals.labels(outcome)
        for operation in RETRY_OPERATIONS:
            self.retries_exhausted.labels(operation)
        for outcome in LIMIT_STORE_OUTCOMES:
            self.limit_store_unavailable.labels(outcome)

    def declare_gateway(
        self,
        *,
        tools: Iterable[str],
        statuses: Iterable[str],
        decisions: Iterable[tuple[str, str]],
        limits: Iterable[str],
        audit_events: Iterable[str],
        retry_reasons: Iterable[str],
    ) -> None:
        """Create the gateway's series at zero: ``tools`` (registered names) by ``statuses``,
        ``decisions`` as (decision, rule) pairs, rate ``limits``, audit events and the error
        codes a tool call may be retried for."""
        names = [*tools, UNKNOWN_TOOL_LABEL]
        outcomes = tuple(statuses)
        for tool in names:
            self.tool_call_duration.labels(tool)
            self.tool_output_bytes.labels(tool)
            for status in outcomes:
                self.tool_calls.labels(tool, status)
        for decision, rule in decisions:
            self.policy_decisions.labels(decision, rule)
        for limit in limits:
            self.rate_limited.labels(limit)
        for event in audit_events:
            self.audit_records.labels(event)
        for reason in retry_reasons:
            self.retries.labels("tool_call", reason)
        self.audit_write_failures.inc(0)
        self.agent.declare_tools(tools)

    @contextlib.contextmanager
    def approval_waiting(self) -> Iterator[None]:
        """Count a call as waiting for an approval decision while the block runs."""
        token = object()
        self._waiting.since[id(token)] = time.monotonic()
        try:
            yield
        finally:
            del self._waiting.since[id(token)]

    def sample(self, name: str, **labels: Any) -> float:
        """The current value of one sample (0 when it does not exist); for tests and the CLI."""
        value = self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return 0.0 if value is None else value

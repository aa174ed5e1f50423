"""Every Prometheus metric Stockade exports, defined in one place.

Metrics live in their own :class:`~prometheus_client.CollectorRegistry` (one
per :class:`Metrics`), so tests and several gateways in one process never
collide; an exporter serves ``metrics.registry``.

Label values are bounded on purpose: tool names come from the registry (a name
the model made up is counted as ``unknown``), rule and limit names from the
policy, statuses and decisions from enums. Nothing the model writes freely
becomes a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["UNKNOWN_TOOL_LABEL", "Metrics"]

UNKNOWN_TOOL_LABEL = "unknown"
"""The ``tool`` label of calls naming a tool that does not exist."""

# Tool calls span sub-millisecond refusals to minutes-long programs.
_CALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Humans answer in seconds to minutes.
_APPROVAL_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The platform's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        """Where the metrics are registered; serve it to Prometheus."""
        reg = self.registry
        self.tool_calls = Counter(
            "stockade_tool_calls",
            "Tool calls through the gateway, by tool and final status.",
            ["tool", "status"],
            registry=reg,
        )
        self.tool_call_duration = Histogram(
            "stockade_tool_call_duration_seconds",
            "Wall-clock time of tool calls through the gateway, approval waits included.",
            ["tool"],
            buckets=_CALL_BUCKETS,
            registry=reg,
        )
        self.policy_decisions = Counter(
            "stockade_policy_decisions",
            "Policy decisions, by decision and deciding rule (rule is empty for the default).",
            ["decision", "rule"],
            registry=reg,
        )
        self.rate_limited = Counter(
            "stockade_rate_limited",
            "Calls refused by a rate limit, by the limit that refused.",
            ["limit"],
            registry=reg,
        )
        self.approvals = Counter(
            "stockade_approvals",
            "Approval requests that ended, by outcome (approved, denied, expired).",
            ["outcome"],
            registry=reg,
        )
        self.approval_wait = Histogram(
            "stockade_approval_wait_seconds",
            "How long calls waited for an approval decision.",
            buckets=_APPROVAL_BUCKETS,
            registry=reg,
        )
        self.tool_retries = Counter(
            "stockade_tool_retries",
            "Attempts of tool calls after the first (retryable infrastructure failures).",
            ["tool"],
            registry=reg,
        )
        self.audit_write_failures = Counter(
            "stockade_audit_write_failures",
            "Audit records that could not be written (the gateway then fails closed).",
            registry=reg,
        )

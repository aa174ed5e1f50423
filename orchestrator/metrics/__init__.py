"""Observability: every Prometheus metric, its exposition over HTTP, and structured logs.

- :class:`Metrics` defines every metric once (``_metrics``, ``_sandbox``,
  ``_agent``; the GenAI conventions' names in :mod:`~orchestrator.metrics.genai`,
  buckets in ``_buckets``). :meth:`~orchestrator.platform.Platform.open`
  makes one and hands it to the gateway and the sandbox backend; the agent
  loop reports its events to ``metrics.agent.observe``; the Ray backend reports
  its sandbox hosts to ``metrics.hosts`` (``_hosts``: a ``host`` label of the
  operator's host names).
- :func:`serve_metrics` serves ``/metrics`` from a long-running process;
  :func:`metrics_app` is the same as an ASGI application for the HTTP server;
  :func:`render` is the exposition itself (see ``_exposition`` for how several
  processes are scraped).
- :func:`configure_logging` sets up text or JSON-lines logs carrying the
  identifiers metrics must not (run, call, tool, decision, status).
"""

from orchestrator.metrics import genai
from orchestrator.metrics._agent import AgentEventLike, AgentMetrics
from orchestrator.metrics._exposition import (
    MetricsEndpoint,
    live_targets,
    metrics_app,
    render,
    serve_metrics,
)
from orchestrator.metrics._hosts import HostMetrics, HostSample
from orchestrator.metrics._logs import LOG_FORMATS, JsonLinesFormatter, configure_logging
from orchestrator.metrics._metrics import (
    APPROVAL_OUTCOMES,
    RETRY_OPERATIONS,
    UNKNOWN_TOOL_LABEL,
    Metrics,
)
from orchestrator.metrics._sandbox import PoolSize, SandboxMetrics

__all__ = [
    "APPROVAL_OUTCOMES",
    "LOG_FORMATS",
    "RETRY_OPERATIONS",
    "UNKNOWN_TOOL_LABEL",
    "AgentEventLike",
    "AgentMetrics",
    "HostMetrics",
    "HostSample",
    "JsonLinesFormatter",
    "Metrics",
    "MetricsEndpoint",
    "PoolSize",
    "SandboxMetrics",
    "configure_logging",
    "genai",
    "live_targets",
    "metrics_app",
    "render",
    "serve_metrics",
]

"""OpenTelemetry traces of runs, after the GenAI semantic conventions.

One trace per run: an ``invoke_agent`` span, a ``chat`` span per model call
and an ``execute_tool`` span per tool call, whose children are the gateway's
steps (``stockade.policy``, ``stockade.rate_limit``, ``stockade.approval``, and
per attempt ``stockade.intent``, ``stockade.sandbox.acquire``,
``stockade.sandbox.execute``). Spans go over OTLP/HTTP through a batch
processor. Content (messages, arguments, outputs) is recorded only with
``tracing.capture_content``, redacted by the policy's patterns. A resumed run
is a second root in its trace, linked to the first.

Off (the default), nothing here imports OpenTelemetry and nothing on the
hot path checks for it: the platform builds the plain :class:`Gateway`; only
when tracing is on does it build :class:`TracedGateway` (from
:func:`gateway_type`), and the agent loop asks ``gateway.tracer`` once per run
and per model call. The SDK comes with the ``stockade[tracing]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.tracing._context import current_trace_id

if TYPE_CHECKING:
    from orchestrator.tracing._open import gateway_type, open_tracer
    from orchestrator.tracing._tracer import ChatSpan, RunSpan, RunTracer

__all__ = ["ChatSpan", "RunSpan", "RunTracer", "current_trace_id", "gateway_type", "open_tracer"]


def __getattr__(name: str) -> object:
    # Imported on first use: the log formatter imports this package from below the
    # gateway (no cycle), and the classes that need the SDK come with the extra only.
    if name in {"gateway_type", "open_tracer"}:
        from orchestrator.tracing import _open  # noqa: PLC0415 - see above

        return getattr(_open, name)
    if name in {"ChatSpan", "RunSpan", "RunTracer"}:
        from orchestrator.tracing import _tracer  # noqa: PLC0415 - the tracing extra

        return getattr(_tracer, name)
    raise AttributeError(name)

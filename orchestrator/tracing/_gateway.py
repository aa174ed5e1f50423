"""The gateway with spans: ``execute_tool`` per call, a child span per step.

A subclass rather than branches in :class:`~orchestrator.gateway.Gateway`:
with tracing off the platform builds the plain gateway, whose path carries
no tracing check at all. Each override wraps the step's method of the base
class and adds what the step decided to its span.
"""

from __future__ import annotations

from typing import Any

from orchestrator.gateway import Gateway
from orchestrator.gateway._gateway import _Trace
from orchestrator.policy import Decision, RateLimitAnswer, RateLimiter
from orchestrator.sandbox.live import OutputListener
from orchestrator.tools import ToolCall, ToolExecutor, ToolResult, ValidatedCall
from orchestrator.tracing._tracer import RunTracer

__all__ = ["TracedGateway", "TracedRateLimiter"]


class TracedRateLimiter(RateLimiter):
    """A rate limiter whose checks are ``stockade.rate_limit`` spans."""

    def __init__(self, *args: Any, tracer: RunTracer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracer = tracer

    def check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer:
        """:meth:`RateLimiter.check` in a span (in the thread it waits in)."""
        with self._tracer.step("rate_limit", **{"stockade.rate_limit.waited": True}) as span:
            answer = super().check(tool_name, run_id=run_id, principal=principal)
            _limited(span, answer)
            return answer

    def try_check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer | None:
        """:meth:`RateLimiter.try_check` in a span."""
        with self._tracer.step("rate_limit") as span:
            answer = super().try_check(tool_name, run_id=run_id, principal=principal)
            if answer is None:
                span.set_attribute("stockade.rate_limit.deferred", True)
            else:
                _limited(span, answer)
            return answer


def _limited(span: Any, answer: RateLimitAnswer) -> None:
    span.set_attribute("stockade.rate_limit.allowed", answer.allowed)
    if answer.limit:
        span.set_attribute("stockade.rate_limit.limit", answer.limit)
    if not answer.allowed:
        span.set_attribute("stockade.rate_limit.retry_after_s", answer.retry_after_s)


class TracedGateway(Gateway):
    """A :class:`~orchestrator.gateway.Gateway` that traces every call it takes."""

    def __init__(
        self,
        executor: ToolExecutor,
        *args: Any,
        tracer: RunTracer,
        rate_limiter: RateLimiter | None = None,
        **kwargs: Any,
    ) -> None:
        """The gateway's arguments, and the ``tracer`` its spans go to."""
        self._tracer = tracer
        if rate_limiter is None:
            policy = args[0] if args else kwargs["policy"]
            rate_limiter = TracedRateLimiter(
                policy.rate_limits, store=kwargs.get("limit_store"), tracer=tracer
            )
        super().__init__(executor, *args, rate_limiter=rate_limiter, **kwargs)

    @property
    def tracer(self) -> RunTracer:
        """The tracer of the platform's runs."""
        return self._tracer

    async def call(self, call: ToolCall, *, on_output: OutputListener | None = None) -> ToolResult:
        """:meth:`Gateway.call` in an ``execute_tool`` span."""
        tracer = self._tracer
        with tracer.tool(call) as span:
            spec = self._registry.get(call.name)
            if spec is not None:  # the registered name (the model may spell it its way)
                span.set_attribute("stockade.tool", spec.name)
            result = await super().call(call, on_output=on_output)
            tracer.tool_result(span, result)
        return result

    def _decide(self, checked: ValidatedCall) -> Decision:
        with self._tracer.step("policy") as span:
            decision = super()._decide(checked)
            span.set_attribute("stockade.policy.decision", decision.decision.value)
            if decision.rule:
                span.set_attribute("stockade.policy.rule", decision.rule)
            return decision

    async def _approve(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> tuple[ValidatedCall, Decision] | ToolResult:
        with self._tracer.step("approval") as span:
            answer = await super()._approve(checked, decision, trace)
            if trace.approval is not None:
                span.set_attribute("stockade.approval.status", trace.approval.status)
                span.set_attribute("stockade.approval.waited_s", trace.approval.waited_s or 0.0)
                if trace.approval.decided_by:
                    span.set_attribute("stockade.approval.decided_by", trace.approval.decided_by)
            return answer

    async def _execute(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> ToolResult:
        with self._tracer.step("sandbox") as span:
            result = await super()._execute(checked, decision, trace)
            span.set_attribute("stockade.sandbox.profile", trace.profile or "")
            span.set_attribute("stockade.sandbox.attempts", len(trace.intents))
            span.set_attribute("stockade.tool.status", result.status.value)
            if result.image_digest:
                span.set_attribute("stockade.sandbox.image_digest", result.image_digest)
            return result

    async def _intend(self, checked: ValidatedCall, decision: Decision, trace: _Trace) -> None:
        with self._tracer.step("audit_intent", **{"stockade.attempt": len(trace.intents) + 1}):
            await super()._intend(checked, decision, trace)

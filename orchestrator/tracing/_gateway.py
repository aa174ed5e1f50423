"""The gateway with spans: ``execute_tool`` per call, a child span per step.

A subclass rather than branches in :class:`~orchestrator.gateway.Gateway`:
with tracing off the platform builds the plain gateway, whose path carries
no tracing check at all. Each override wraps the step's method of the base
class and adds what the step decided to its span.
"""

from __future__ import annotations

import time
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
        """:meth:`RateLimiter.check` as a span (in the thread it waits in)."""
        started = time.time_ns()
        answer = super().check(tool_name, run_id=run_id, principal=principal)
        self._tracer.step("rate_limit", started, _limited(answer, waited=True))
        return answer

    def try_check(
        self, tool_name: str, *, run_id: str | None = None, principal: str | None = None
    ) -> RateLimitAnswer | None:
        """:meth:`RateLimiter.try_check` as a span (none when it defers to :meth:`check`)."""
        started = time.time_ns()
        answer = super().try_check(tool_name, run_id=run_id, principal=principal)
        if answer is not None:
            self._tracer.step("rate_limit", started, _limited(answer, waited=False))
        return answer


def _limited(answer: RateLimitAnswer, *, waited: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {"stockade.rate_limit.allowed": answer.allowed}
    if waited:
        attributes["stockade.rate_limit.waited"] = True
    if answer.limit:
        attributes["stockade.rate_limit.limit"] = answer.limit
    if not answer.allowed:
        attributes["stockade.rate_limit.retry_after_s"] = answer.retry_after_s
    return attributes


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
        spec = self._registry.get(call.name)
        with tracer.tool(call, spec.name if spec is not None else None) as span:
            result = await super().call(call, on_output=on_output)
            tracer.tool_result(span, result)
        return result

    def _decide(self, checked: ValidatedCall) -> Decision:
        started = time.time_ns()
        decision = super()._decide(checked)
        attributes = {"stockade.policy.decision": decision.decision.value}
        if decision.rule:
            attributes["stockade.policy.rule"] = decision.rule
        self._tracer.step("policy", started, attributes)
        return decision

    async def _approve(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> tuple[ValidatedCall, Decision] | ToolResult:
        started = time.time_ns()
        try:
            return await super()._approve(checked, decision, trace)
        finally:  # a wait that was cancelled shows too
            approval = trace.approval
            attributes: dict[str, Any] = {
                "stockade.approval.status": approval.status if approval else "cancelled"
            }
            if approval is not None and approval.decided_by:
                attributes["stockade.approval.decided_by"] = approval.decided_by
            self._tracer.step("approval", started, attributes)

    async def _execute(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> ToolResult:
        started = time.time_ns()
        result = await super()._execute(checked, decision, trace)
        attributes: dict[str, Any] = {
            "stockade.sandbox.profile": trace.profile or "",
            "stockade.sandbox.attempts": len(trace.intents),
            "stockade.tool.status": result.status.value,
        }
        if result.image_digest:
            attributes["stockade.sandbox.image_digest"] = result.image_digest
        self._tracer.step("sandbox", started, attributes)
        return result

"""The gateway: the one path every tool call takes, whoever calls.

1. the registry validates the call (tool exists, arguments match its schema);
2. the policy decides: allow, deny or require approval (+ profile, timeout, retries);
3. the rate limits count it, or refuse it with ``retry_after``;
4. a call that needs approval waits for a durable decision (or its timeout);
5. the executor runs it in a fresh sandbox, retrying only retryable failures; before each
   attempt an intent record is durable in the audit log (write-ahead: no call runs without
   one, and a call whose intent cannot be written does not run);
6. an audit record (the outcome, naming its intents), metrics and a log line are written,
   whatever the outcome.

:meth:`Gateway.call` never raises (cancellation aside): every outcome,
including the gateway's own bugs, is a :class:`~orchestrator.tools.ToolResult`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.approvals import ApprovalRequest, ApprovalStatus
from orchestrator.audit import (
    ApprovalInfo,
    AuditEvent,
    AuditLog,
    AuditRecord,
    RateLimitInfo,
)
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError, UsageError
from orchestrator.gateway._approval_gate import ApprovalGate
from orchestrator.gateway._retry import run_with_retries
from orchestrator.metrics import UNKNOWN_TOOL_LABEL, Metrics
from orchestrator.policy import (
    Decision,
    Effect,
    LimitStore,
    ModelBudget,
    Policy,
    RateLimitAnswer,
    RateLimiter,
    RetrySettings,
    evaluate,
)
from orchestrator.sandbox.live import OutputListener, listening
from orchestrator.tools import (
    ToolCall,
    ToolExecutor,
    ToolResult,
    ToolStatus,
    ValidatedCall,
    infrastructure_result,
)

if TYPE_CHECKING:
    from orchestrator.tracing import RunTracer

__all__ = ["Gateway"]

_log = logging.getLogger(__name__)
# Raw arguments of a call that failed validation are kept, capped: they are
# hostile and may be huge.
_RAW_ARGUMENTS_CAP = 4096
# Metric children kept per (metric, label values); the values come from bounded
# sets (registered tools, statuses, rules, events), the cap is a safety net.
_CHILDREN_CAP = 4096
# Why a sandboxed call is retried: the retryable error codes, and a tool's own failure.
_RETRY_REASONS = (
    *(
        code.value
        for code in (
            ErrorCode.ENGINE_UNAVAILABLE,
            ErrorCode.ENGINE_ERROR,
            ErrorCode.CONTAINER_START_FAILED,
            ErrorCode.CONTAINER_DIED,
            ErrorCode.RUNNER_PROTOCOL,
            ErrorCode.TIMEOUT,
        )
    ),
    "tool_error",
)


@dataclass
class _Trace:
    """What happened to one call on its way through; becomes its audit record."""

    arguments: dict[str, Any] | None = None
    decision: Decision | None = None
    rate: RateLimitAnswer | None = None
    approval: ApprovalInfo | None = None
    retries: int = 0
    profile: str | None = None
    intents: list[int] = field(default_factory=list)
    """The ``seq`` of each attempt's intent record, in order."""


class _IntentNotWritten(Exception):
    """The attempt's intent record could not be made durable, so the attempt did not run."""

    def __init__(self, cause: InfrastructureError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _raw_arguments(arguments: Any) -> Any:
    """Arguments that failed validation, as the audit record keeps them.

    A JSON object stays an object, so the audit log's key rules hide
    ``{"password": ...}`` in it (and wherever else the record quotes the value,
    such as the validation error); anything else is kept as text, capped.
    """
    if isinstance(arguments, str) and len(arguments) <= _RAW_ARGUMENTS_CAP:
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    if isinstance(arguments, dict):
        return arguments  # the audit log bounds every value of it
    raw = arguments if isinstance(arguments, str) else repr(arguments)
    return raw[:_RAW_ARGUMENTS_CAP]


def _refusal(call: ToolCall, status: ToolStatus, error: str, **extra: Any) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, status=status, error=error, **extra)


def _approval_scope(request: ApprovalRequest) -> str | None:
    """What an approval covers, for the audit record; nothing for a denial or an expiry."""
    return request.scope.value if request.status is ApprovalStatus.APPROVED else None


class Gateway:
    """Checks, gates, runs and records tool calls under one policy."""

    def __init__(
        self,
        executor: ToolExecutor,
        policy: Policy,
        audit: AuditLog,
        *,
        approvals: ApprovalGate | None = None,
        metrics: Metrics | None = None,
        rate_limiter: RateLimiter | None = None,
        limit_store: LimitStore | None = None,
        default_retry: RetrySettings | None = None,
        retry_wait_s: tuple[float, float] = (0.2, 5.0),
        policy_source: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Check that the pieces fit together, and record the policy in the audit log.

        ``rate_limiter`` defaults to one over ``policy.rate_limits`` kept in
        ``limit_store`` (default: this process's memory; pass a
        :class:`~orchestrator.policy.SqliteLimitStore` to share limits with
        the host's other processes); runs' model budgets live in the same store;
        ``default_retry`` applies to calls whose rule sets no ``retry``;
        ``retry_wait_s`` is the (first, largest) backoff between attempts;
        ``policy_source`` (the file's path) is written to the audit log.
        Raises :class:`~orchestrator.errors.ConfigError` when the policy names
        a sandbox profile the executor lacks, needs approvals but has no
        approval gate, or when the audit log would not redact the policy's
        secrets; and :class:`~orchestrator.errors.InfrastructureError` when
        the audit log cannot be written (the gateway refuses to start blind).
        """
        self._executor = executor
        self._registry = executor.registry
        self._policy = policy
        self._audit = audit
        self._approvals = approvals
        self._metrics = metrics if metrics is not None else Metrics()
        if rate_limiter is None:
            rate_limiter = RateLimiter(policy.rate_limits, store=limit_store)
        elif limit_store is not None and limit_store is not rate_limiter.store:
            raise UsageError("the rate limiter must keep its states in the gateway's limit store")
        self._limiter = rate_limiter
        self._default_retry = default_retry or RetrySettings()
        self._retry_wait_s = retry_wait_s
        self._clock = clock
        self._audit_ok = True
        self._budgets: dict[str, ModelBudget] = {}
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._check_config(policy_source)
        self._declare_metrics()
        audit.append(
            AuditRecord(
                event=AuditEvent.POLICY_LOADED,
                detail={
                    "source": policy_source,
                    "sha256": hashlib.sha256(policy.model_dump_json().encode()).hexdigest(),
                    "rules": len(policy.rules),
                    "rate_limits": len(policy.rate_limits),
                },
            )
        )
        self._metrics.audit_records.labels(AuditEvent.POLICY_LOADED.value).inc()

    def _check_config(self, source: str | None) -> None:
        where = source or "policy"
        for index, rule in enumerate(self._policy.rules):
            if rule.sandbox_profile and rule.sandbox_profile not in self._executor.profiles:
                raise ConfigError(
                    f"sandbox profile {rule.sandbox_profile!r} of rule {rule.name!r} is unknown; "
                    f"known: {', '.join(sorted(self._executor.profiles))}",
                    file=where,
                    field=f"rules[{index}].sandbox_profile",
                )
            if rule.decision is Effect.REQUIRE_APPROVAL and self._approvals is None:
                raise ConfigError(
                    f"rule {rule.name!r} requires approval, but the gateway has no approval store",
                    file=where,
                    field=f"rules[{index}].decision",
                )
        missing = set(self._policy.redact) - set(self._audit.redact_patterns)
        if missing:
            raise ConfigError(
                "the audit log does not redact these patterns of the policy: "
                + ", ".join(sorted(missing)),
                file=where,
                field="redact",
            )

    def _declare_metrics(self) -> None:
        """Every series a dashboard reads exists at zero before the first call."""
        policy = self._policy
        self._metrics.declare_gateway(
            tools=[spec.name for spec in self._registry.tools()],
            statuses=[status.value for status in ToolStatus],
            decisions=[
                *((rule.decision.value, rule.name) for rule in policy.rules),
                (policy.default, ""),
            ],
            limits=[limit.name for limit in policy.rate_limits],
            audit_events=[event.value for event in AuditEvent],
            retry_reasons=_RETRY_REASONS,
        )

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus_client checks and looks the
        values up under a lock on every call (an ``inc`` through ``labels`` measured 2.1 µs,
        on the child 0.6; a histogram's ``observe`` 3.3 against 1.0), six times a call."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _CHILDREN_CAP:
                self._children.clear()
            child = self._children[key] = metric.labels(*values)
        return child

    @property
    def policy(self) -> Policy:
        """The policy calls are checked against."""
        return self._policy

    def model_budget(self, run_id: str) -> ModelBudget:
        """The model side of run ``run_id`` (tokens, model calls) under this policy.

        One budget per run, shared by everyone who asks: the agent loop calls
        :meth:`~orchestrator.policy.ModelBudget.start_call` before each model
        call and records the tokens after. :meth:`end_run` forgets it.
        """
        budget = self._budgets.get(run_id)
        if budget is None:
            budget = self._budgets.setdefault(
                run_id,
                ModelBudget(self._policy.model_limits, store=self._limiter.store, run_id=run_id),
            )
        return budget

    def end_run(self, run_id: str) -> None:
        """Forget the run's model budget (its rate-limit state expires by itself)."""
        self._budgets.pop(run_id, None)
        self._limiter.store.forget(run_id)

    @property
    def metrics(self) -> Metrics:
        """The gateway's metrics (serve ``metrics.registry`` to Prometheus)."""
        return self._metrics

    @property
    def tracer(self) -> RunTracer | None:
        """The runs' tracer; None here: this gateway traces nothing and checks nothing for it
        (the platform builds ``orchestrator.tracing``'s ``TracedGateway`` when tracing is on)."""
        return None

    def tools(self) -> list[dict[str, Any]]:
        """The tools in OpenAI's function-calling format, to offer a model."""
        return self._registry.openai_tools()

    async def call(self, call: ToolCall, *, on_output: OutputListener | None = None) -> ToolResult:
        """Take one call the whole way; the result is what the caller (the model) reads.

        ``on_output`` gets the tool's output while it runs (sync, must not block)."""
        started = self._clock()
        trace = _Trace()
        try:
            with listening(on_output):
                result = await self._run(call, trace)
        except asyncio.CancelledError:
            await self._finish(
                call,
                trace,
                _refusal(call, ToolStatus.CANCELLED, "the call was cancelled"),
                started,
            )
            raise
        except Exception as exc:
            # A bug of ours must not take the agent down; the record keeps it.
            _log.exception("gateway failed on call %s (%s)", call.id, call.name)
            result = _refusal(
                call,
                ToolStatus.INFRASTRUCTURE_ERROR,
                f"the platform failed to handle the call ({type(exc).__name__}: {exc})",
            )
        return await self._finish(call, trace, result, started)

    async def _run(self, call: ToolCall, trace: _Trace) -> ToolResult:
        if not self._audit_ok:
            return _refusal(
                call,
                ToolStatus.INFRASTRUCTURE_ERROR,
                "the audit log cannot be written, so no calls run until it can; tell the operator",
            )
        checked = self._registry.validate(call)
        if isinstance(checked, ToolResult):
            return checked
        trace.arguments = checked.arguments
        decision = self._decide(checked)
        # Once per call, here: arguments an approver edits are decided again (_edited),
        # but that is still this call, and a dashboard's share of denials is per call.
        self._child(
            self._metrics.policy_decisions, decision.decision.value, decision.rule or ""
        ).inc()
        trace.decision = decision
        if decision.decision is Effect.DENY:
            return _refusal(call, ToolStatus.DENIED, decision.reason)

        tool, run_id, principal = checked.spec.name, call.run_id, call.principal
        rate = self._limiter.try_check(tool, run_id=run_id, principal=principal)
        if rate is None:
            # The store would have to wait: SQLite (another process holds it, or its
            # housekeeping is due) waits in a thread, Redis on this loop. Inline ~21 µs
            # p50, in a thread ~62; a Redis check through asyncio.to_thread ~190 µs
            # under load against ~100 µs awaited on the loop (see limits_bench).
            rate = await self._limiter.check_async(tool, run_id=run_id, principal=principal)
        trace.rate = rate
        if not rate.allowed:
            assert rate.limit  # a refusal always names its limit (RateLimitAnswer checks)
            self._metrics.rate_limited.labels(rate.limit).inc()
            reached = (
                f"rate limit {rate.limit!r} reached"
                if rate.reason is None
                else f"{rate.reason}, and limits fail closed: the call was not run"
            )
            return _refusal(
                call,
                ToolStatus.RATE_LIMITED,
                f"{reached}; try again in {rate.retry_after_s:.1f} s",
                retry_after_s=rate.retry_after_s,
            )

        if decision.decision is Effect.REQUIRE_APPROVAL:
            approved = await self._approve(checked, decision, trace)
            if isinstance(approved, ToolResult):
                return approved
            checked, decision = approved

        trace.profile = decision.sandbox_profile or checked.spec.profile
        return await self._execute(checked, decision, trace)

    def _decide(self, checked: ValidatedCall) -> Decision:
        call = checked.call
        return evaluate(self._policy, checked.spec.name, checked.arguments, call.principal)

    async def _approve(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> tuple[ValidatedCall, Decision] | ToolResult:
        """Wait for a decision; the call to run (the approver may have edited it), or a refusal."""
        assert self._approvals is not None  # checked at construction
        call = checked.call
        timeout_s = decision.approval_timeout_s or self._policy.approval_timeout_s
        waiting = self._clock()
        with self._metrics.approval_waiting():
            authorised = await self._approvals.authorise(
                call,
                checked.arguments,
                tool=checked.spec.name,
                rule=decision.rule,
                reason=decision.reason,
                timeout_s=timeout_s,
                on_request=lambda request: self._record_approval(
                    AuditEvent.APPROVAL_REQUESTED, checked, request
                ),
            )
        final = authorised.request
        waited = self._clock() - waiting
        trace.approval = ApprovalInfo(
            request_id=final.id,
            status=final.status.value,
            decided_by=final.decided_by,
            edited_arguments=final.edited_arguments,
            waited_s=round(waited, 6),
            scope=_approval_scope(final),
        )
        if not authorised.standing_grant:  # a grant's decision was counted and recorded once
            self._metrics.approvals.labels(final.status.value).inc()
            self._metrics.approval_wait.observe(waited)
            self._record_approval(AuditEvent.APPROVAL_DECIDED, checked, final)

        if final.status is ApprovalStatus.DENIED:
            note = f": {final.note}" if final.note else ""
            return _refusal(
                call, ToolStatus.APPROVAL_DENIED, f"{final.decided_by} denied the call{note}"
            )
        if final.status is ApprovalStatus.EXPIRED and self._policy.on_approval_timeout == "deny":
            return _refusal(
                call,
                ToolStatus.APPROVAL_DENIED,
                f"nobody approved the call within {timeout_s:g} s, and the policy denies "
                "unanswered requests",
            )
        if final.edited_arguments is None:
            return checked, decision
        return self._edited(checked, final)

    def _edited(
        self, checked: ValidatedCall, final: ApprovalRequest
    ) -> tuple[ValidatedCall, Decision] | ToolResult:
        """Validate and re-decide the approver's edited arguments."""
        call = checked.call.model_copy(update={"arguments": final.edited_arguments})
        rechecked = self._registry.validate(call)
        if isinstance(rechecked, ToolResult):
            return rechecked.model_copy(
                update={
                    "error": f"the approver's edited arguments were rejected: {rechecked.error}"
                }
            )
        decision = self._decide(rechecked)
        if decision.decision is Effect.DENY:
            return _refusal(
                call, ToolStatus.DENIED, f"the approver's edited arguments: {decision.reason}"
            )
        # The approver saw these exact arguments, so a rule that would ask for
        # approval again is satisfied; its profile, timeout and retries apply.
        return rechecked, decision

    async def _execute(
        self, checked: ValidatedCall, decision: Decision, trace: _Trace
    ) -> ToolResult:
        settings = decision.retry or self._default_retry

        def retried(_attempt: int, error: BaseException | None) -> None:
            trace.retries += 1
            reason = error.code.value if isinstance(error, InfrastructureError) else "tool_error"
            self._metrics.retries.labels("tool_call", reason).inc()

        async def attempt() -> ToolResult:
            await self._intend(checked, decision, trace)
            return await self._executor.run(
                checked, profile=decision.sandbox_profile, timeout_s=decision.timeout_s
            )

        first_wait, max_wait = self._retry_wait_s
        try:
            result = await run_with_retries(
                attempt,
                settings,
                failed=lambda result: result.status is ToolStatus.ERROR,
                on_retry=retried,
                initial_wait_s=first_wait,
                max_wait_s=max_wait,
                ready=self._executor.wait_ready,
            )
        except _IntentNotWritten as refused:
            return _refusal(
                checked.call,
                ToolStatus.INFRASTRUCTURE_ERROR,
                "the call did not run: its intent could not be written to the audit log "
                f"({refused.cause}); no call runs until the log can be written, tell the operator",
            )
        except InfrastructureError as exc:
            if exc.retryable and settings.max_attempts > 1:
                self._metrics.retries_exhausted.labels("tool_call").inc()
            return infrastructure_result(checked.call, exc)
        if trace.retries and settings.retry_on_tool_error and result.status is ToolStatus.ERROR:
            self._metrics.retries_exhausted.labels("tool_call").inc()
        return result

    async def _intend(self, checked: ValidatedCall, decision: Decision, trace: _Trace) -> None:
        """Make this attempt's intent durable before anything runs; raise if it cannot be."""
        call = checked.call
        intent = AuditRecord(
            event=AuditEvent.INTENT,
            call_id=call.id,
            run_id=call.run_id,
            principal=call.principal,
            tool=checked.spec.name,
            arguments=checked.arguments,
            decision=decision.decision,
            rule=decision.rule,
            approval=trace.approval,
            sandbox_profile=trace.profile,
            attempt=len(trace.intents) + 1,
        )
        try:
            written = await self._audit.write(intent)
        except InfrastructureError as exc:
            self._audit_failed(exc)
            raise _IntentNotWritten(exc) from exc
        self._audit_works()
        self._child(self._metrics.audit_records, AuditEvent.INTENT.value).inc()
        trace.intents.append(written["seq"])

    def _record_approval(
        self, event: AuditEvent, checked: ValidatedCall, request: ApprovalRequest
    ) -> None:
        call = checked.call
        self._append(
            AuditRecord(
                event=event,
                call_id=call.id,
                run_id=call.run_id,
                principal=call.principal,
                tool=checked.spec.name,
                arguments=checked.arguments,
                rule=request.rule,
                reason=request.note if event is AuditEvent.APPROVAL_DECIDED else request.reason,
                approval=ApprovalInfo(
                    request_id=request.id,
                    status=request.status.value,
                    decided_by=request.decided_by,
                    edited_arguments=request.edited_arguments,
                    scope=_approval_scope(request),
                ),
            )
        )

    async def _finish(
        self, call: ToolCall, trace: _Trace, result: ToolResult, started: float
    ) -> ToolResult:
        """Write the call's audit record and metrics; the result goes back unchanged, once the
        record is durable."""
        elapsed = self._clock() - started
        # The registered name, whichever spelling the call used; an invented
        # name is recorded as sent but never becomes a metric label.
        spec = self._registry.get(call.name)
        tool = spec.name if spec else call.name
        output_bytes = len(result.output.encode("utf-8", "replace"))
        decision = trace.decision
        rate = trace.rate
        detail: dict[str, Any] = {}
        if trace.arguments is None:
            detail["raw_arguments"] = _raw_arguments(call.arguments)
        record = AuditRecord(
            event=AuditEvent.CALL,
            call_id=call.id,
            run_id=call.run_id,
            principal=call.principal,
            tool=tool,
            arguments=trace.arguments,
            decision=decision.decision if decision else None,
            rule=decision.rule if decision else None,
            reason=decision.reason if decision else None,
            approval=trace.approval,
            rate_limit=(
                RateLimitInfo(
                    allowed=rate.allowed, retry_after_s=rate.retry_after_s, limit=rate.limit
                )
                if rate
                else None
            ),
            retries=trace.retries,
            intents=trace.intents,
            sandbox_profile=trace.profile,
            image_digest=result.image_digest,
            host=result.host,
            status=result.status.value,
            exit_code=result.exit_code,
            duration_s=round(elapsed, 6),
            output_bytes=output_bytes,
            output=result.output or None,
            egress=list(result.egress),
            files_changed=list(result.files_changed),
            files_rejected=list(result.files_rejected),
            artifacts=list(result.artifacts),
            error=result.error,
            detail=detail,
        )
        # The record is handed to the writer first, and the metrics and the log
        # line are done while it writes and fsyncs (the loop would idle meanwhile):
        # ~5 µs off each call's path. The result still waits for the record.
        try:
            written: asyncio.Future[dict[str, Any]] | InfrastructureError = self._audit.submit(
                record
            )
        except InfrastructureError as exc:
            written = exc
        self._count_and_log(
            call,
            result,
            trace=trace,
            tool=tool,
            label=spec.name if spec else UNKNOWN_TOOL_LABEL,
            elapsed=elapsed,
            output_bytes=output_bytes,
        )
        await self._recorded(record, written)
        return result

    def _count_and_log(
        self,
        call: ToolCall,
        result: ToolResult,
        *,
        trace: _Trace,
        tool: str,
        label: str,
        elapsed: float,
        output_bytes: int,
    ) -> None:
        """The call's metrics and its log line."""
        metrics = self._metrics
        self._child(metrics.tool_calls, label, result.status.value).inc()
        self._child(metrics.tool_call_duration, label).observe(elapsed)
        self._child(metrics.tool_output_bytes, label).observe(output_bytes)
        if _log.isEnabledFor(logging.INFO):
            decision = trace.decision
            _log.info(
                "call %s (%s): %s",
                call.id,
                tool,
                result.status.value,
                extra={
                    "run_id": call.run_id,
                    "call_id": call.id,
                    "principal": call.principal,
                    "tool": tool,
                    "decision": decision.decision.value if decision else None,
                    "rule": decision.rule if decision else None,
                    "status": result.status.value,
                    "duration_s": round(elapsed, 6),
                    "retries": trace.retries,
                    "profile": trace.profile,
                },
            )

    async def _recorded(
        self, record: AuditRecord, written: asyncio.Future[dict[str, Any]] | InfrastructureError
    ) -> None:
        """Wait until ``record``, already submitted, is durable (or failed)."""
        try:
            if isinstance(written, InfrastructureError):
                raise written
            await written
        except InfrastructureError as exc:
            self._audit_failed(exc)
        else:
            self._audit_works()
            self._child(self._metrics.audit_records, record.event.value).inc()

    def _append(self, record: AuditRecord) -> None:
        """Queue ``record`` without waiting; the call's own record, awaited later and written
        after it, proves it durable."""
        try:
            written = self._audit.submit(record)
        except InfrastructureError as exc:
            self._audit_failed(exc)
            return
        written.add_done_callback(lambda done: self._appended(done, record.event))

    def _appended(self, written: asyncio.Future[dict[str, Any]], event: AuditEvent) -> None:
        if written.cancelled():
            return
        error = written.exception()
        if error is not None:
            self._audit_failed(error)
        else:
            self._audit_works()
            self._metrics.audit_records.labels(event.value).inc()

    def _audit_failed(self, error: BaseException) -> None:
        # Fail closed: the call that just ran keeps its result, but no further
        # call runs until a record can be written again.
        _log.error("audit log %s cannot be written", self._audit.path, exc_info=error)
        self._metrics.audit_write_failures.inc()
        self._audit_ok = False
        # A gauge, not only the counter: with no calls coming, the counter stops rising while
        # the log is as broken as before, and an alert on its increase would clear.
        self._metrics.audit_failing.set(1)

    def _audit_works(self) -> None:
        if not self._audit_ok:  # a change of state only: this runs for every record
            self._audit_ok = True
            self._metrics.audit_failing.set(0)

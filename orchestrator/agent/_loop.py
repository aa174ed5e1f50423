"""One run of the agent loop, from the goal to its end.

1. **planning**: memories relevant to the goal go into the system prompt;
   the first model turn;
2. **executing**: the turn's tool calls go through the gateway (see
   ``_tool_turn``); loop and abuse detection looks at the answers; the next
   turn;
3. **reflecting**: a final answer is checked by asking the model whether the
   goal is fully achieved; "not yet" sends it back to work;
4. the end: **complete**, **failed** (a reason always) or **cancelled**.

Before every model call the conversation is kept within its budget (older
turns summarised) and the run's model budget is drawn on (the policy's
``model_limits``). The state is checkpointed after every step; the step that
names calls about to run is committed before they go to the gateway (if it
cannot be, none goes and the run fails, saying why). A
resumed run (``resumed=True``, its state from the latest checkpoint) goes on
from there: the calls in flight are settled first (``_resume``), then the
turns continue. ``run_timeout_s`` bounds the time worked over every process
that drove the run; ``deadline_s`` bounds the wall-clock time since its start.
A run never raises, cancellation aside: whatever happens ends it with a
status and a reason; a run whose lease another process took stops without
writing anything more, and one whose lease could not be taken at all ends
before it starts (:meth:`RunLoop.not_started`), writing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from orchestrator.agent._context import (
    HEAD,
    SUMMARY_PROMPT,
    Compaction,
    message_tokens,
    plan_compaction,
    summary_message,
    transcript,
)
from orchestrator.agent._detect import CallOutcome, Finding, observe
from orchestrator.agent._durable import CheckpointFailed, LeaseLost
from orchestrator.agent._events import (
    LOG_OUTPUT,
    LOG_TEXT,
    ApprovalPending,
    ContextSummarised,
    Intervened,
    ModelTurn,
    Purpose,
    Reflected,
    RunFinished,
    RunStarted,
    StateChanged,
    clip,
)
from orchestrator.agent._images import is_image_message
from orchestrator.agent._model_errors import ModelError
from orchestrator.agent._model_reply import ModelReply, ModelToolCall
from orchestrator.agent._parts import Reporter, RunParts
from orchestrator.agent._reflect import parse_reflection, reflection_messages
from orchestrator.agent._result import RunResult
from orchestrator.agent._resume import settle_in_flight
from orchestrator.agent._run_budget import RunBudget
from orchestrator.agent._run_memory import MemoryUse
from orchestrator.agent._run_state import RunState
from orchestrator.agent._state import RunStatus, check_transition
from orchestrator.agent._tool_turn import TurnCalls, call_tools, skip_calls
from orchestrator.agent.memory import RunMemory
from orchestrator.approvals import ApprovalRequest
from orchestrator.tracing import current_trace_id

__all__ = ["RunLoop"]

_log = logging.getLogger(__name__)

AGENT_NAME = "stockade"
"""``gen_ai.agent.name`` of a run's ``invoke_agent`` span."""

_EMPTY_REPLY = (
    "Your reply had no text and no tool call. Continue working towards the goal, or give "
    "your final answer."
)


class _Ended(Exception):
    """Ends the run: ``status`` and ``reason`` (and the answer, when complete).

    ``learned``: a failure the agent's own conduct led to (turns, loops, time), worth a
    lesson for later runs of the goal; not one of the platform or the model server,
    which no later run can avoid by acting otherwise.
    """

    def __init__(
        self,
        status: RunStatus,
        reason: str | None,
        answer: str | None = None,
        *,
        learned: bool = True,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.answer = answer
        self.learned = learned


class _ModelUnavailable(_Ended):
    """A model call could not be made (budget spent, server failing): the run fails.

    ``learned`` when the run spent its own budget (its conduct); not when the server
    failed.
    """

    def __init__(self, reason: str, *, learned: bool) -> None:
        super().__init__(RunStatus.FAILED, reason, learned=learned)


class RunLoop:
    """Drives one run's :class:`RunState` to its end."""

    def __init__(
        self,
        parts: RunParts,
        state: RunState,
        reporter: Reporter,
        *,
        memory: RunMemory | None,
        resumed: bool = False,
    ) -> None:
        """``resumed``: ``state`` is a checkpoint of a run whose process stopped."""
        self._parts = parts
        self._config = parts.config
        self.state = state
        self._reporter = reporter
        self._memory = MemoryUse(memory, state, reporter)
        self._budget = RunBudget(
            parts.gateway.model_budget(state.run_id),
            release=lambda: parts.gateway.end_run(state.run_id),
        )
        self._started = time.monotonic()
        self._worked_before = state.elapsed_s
        self._resumed = resumed
        self.lost = False
        """Set when another process took the run's lease: the run stops, writing nothing."""
        self.suspending = False
        """Set before cancelling to suspend the run (the orchestrator stops; it resumes later)
        instead of ending it as cancelled."""
        self.cancel_reason = "the run was cancelled"
        """Why, should the run be cancelled (set by whoever cancels it)."""
        self.result: RunResult | None = None
        """The result, once the run has ended."""

    # -- the run -----------------------------------------------------------

    async def run(self) -> RunResult:
        """Run to the end and return the result. Raises only ``CancelledError`` (after the run
        has been recorded as cancelled)."""
        tracer = self._parts.gateway.tracer
        if tracer is None:
            return await self._run()
        state = self.state
        with tracer.run(
            run_id=state.run_id,
            agent=AGENT_NAME,
            model=self._parts.model.model,
            goal=state.goal,
            principal=state.principal,
            resumed=self._resumed,
        ) as span:
            result = await self._run()
            span.ended(result.status.value, result.reason, result.answer, result.usage)
            return result

    async def _run(self) -> RunResult:
        state, parts = self.state, self._parts
        if parts.approvals is not None:
            parts.approvals.watch(state.run_id, self._approval_pending)
        self._begin()
        left, bound = self._time_left()
        if left is not None and left <= 0:
            return await self._finish(RunStatus.FAILED, self._out_of_time(bound), None)
        timeout = asyncio.timeout(left)
        try:
            async with timeout:
                if self._resumed and state.messages:
                    await self._settle()
                else:
                    await self._plan()
                await self._turns()
        except _Ended as end:
            return await self._finish(end.status, end.reason, end.answer, learned=end.learned)
        except LeaseLost:
            return self._abandon()
        except asyncio.CancelledError:
            if self.lost or self._reporter.recorder.lost:
                return self._abandon()
            if self.suspending:
                await self._suspend()
                raise
            await self._finish(RunStatus.CANCELLED, self.cancel_reason, None)
            raise
        except TimeoutError:
            if not timeout.expired():
                raise
            return await self._finish(RunStatus.FAILED, self._out_of_time(bound), None)
        except Exception as exc:
            _log.exception("run %s failed", state.run_id)
            return await self._finish(
                RunStatus.FAILED,
                f"the agent failed: {type(exc).__name__}: {exc}",
                None,
                learned=False,
            )
        raise AssertionError("a run ends by _Ended")  # pragma: no cover

    def _begin(self) -> None:
        """Report the start, or the resume."""
        state, parts, config = self.state, self._parts, self._config
        if self._resumed:
            state.resumes += 1
            self._reporter.notice(
                f"resumed after its process stopped (resume {state.resumes}; "
                f"{state.elapsed_s:.1f} s worked so far, at iteration {state.iteration})"
            )
            return
        state.started_at = parts.clock()
        if config.deadline_s is not None:
            state.deadline_at = state.started_at + config.deadline_s
        self._reporter.emit(
            RunStarted(
                run_id=state.run_id,
                at=state.started_at,
                goal=state.goal,
                principal=state.principal,
                model=parts.model.model,
                tools=parts.tool_names,
                trace_id=current_trace_id.get(),
            )
        )

    def _worked(self) -> float:
        """Time worked on the run, over every process that drove it."""
        return self._worked_before + time.monotonic() - self._started

    def _time_left(self) -> tuple[float | None, str]:
        """Seconds the run may still take, and which bound that is."""
        config, state = self._config, self.state
        bounds = []
        if config.run_timeout_s is not None:
            bounds.append((config.run_timeout_s - state.elapsed_s, "run_timeout_s"))
        if state.deadline_at is not None:
            bounds.append((state.deadline_at - self._parts.clock(), "deadline_s"))
        if not bounds:
            return None, ""
        return min(bounds)

    def _out_of_time(self, bound: str) -> str:
        state = self.state
        if bound == "deadline_s" and state.deadline_at is not None:
            return (
                f"the run passed its deadline ({state.deadline_at - state.started_at:g} s after "
                "its start, downtime included: deadline_s); its calls were cancelled"
            )
        return (
            f"the run timed out after {self._config.run_timeout_s:g} s (run_timeout_s); "
            "its calls were cancelled"
        )

    async def _plan(self) -> None:
        self._move(RunStatus.PLANNING)
        system = self._config.system_prompt
        recalled = await self._memory.recall()
        if recalled:
            system = f"{system}\n\n{recalled}"
        self._say({"role": "system", "content": system})
        self._say({"role": "user", "content": self.state.goal})
        self._checkpoint()

    async def _turns(self) -> None:
        state, config = self.state, self._config
        while True:
            if state.iteration >= config.max_iterations:
                raise _Ended(
                    RunStatus.FAILED,
                    f"the goal was not reached within {config.max_iterations} model turns "
                    "(max_iterations)",
                )
            # Counted once the context fits: a summary's checkpoint still names the
            # turn before, so a run resumed from it asks for this turn again.
            await self._fit_context(state.iteration + 1)
            state.iteration += 1
            reply = await self._ask(state.messages, purpose="turn", tools=self._parts.tools)
            self._say(reply.to_message())
            if reply.tool_calls:
                state.in_flight = list(reply.tool_calls)
                # Committed before any call goes out: after a restart, the run knows
                # which calls may have run (never run again blindly).
                await self._name_calls_durably(reply.tool_calls)
                self._move(RunStatus.EXECUTING)
                done = await call_tools(self._parts, state, self._reporter, reply.tool_calls)
                self._after_calls(done)
            elif not (reply.content or "").strip():
                self._say({"role": "user", "content": _EMPTY_REPLY})
                self._detect([])
            else:
                await self._judge(reply.content or "")
            self._checkpoint()

    async def _settle(self) -> None:
        """A resumed run: answer the calls in flight at the stop, then go on with the turns."""
        state, parts = self.state, self._parts
        calls = state.in_flight
        if not calls:
            return
        settled = await settle_in_flight(parts, state.run_id, calls, parts.audit_path)
        if settled:
            self._reporter.notice(
                f"{len(settled)} call(s) in flight at the stop are not run again: "
                + ", ".join(sorted(settled))
            )
        self._move(RunStatus.EXECUTING)
        done = await call_tools(parts, state, self._reporter, calls, settled=settled)
        self._after_calls(done)
        self._checkpoint()

    def _after_calls(self, done: TurnCalls) -> None:
        self.state.in_flight = []
        if done.broken is not None:
            raise _Ended(
                RunStatus.FAILED,
                f"the platform could not run {self._parts.tool_name(done.broken.name)}:"
                f" {done.broken.error}",
                learned=False,
            )
        self._detect(done.outcomes)

    # -- model calls ---------------------------------------------------------

    async def _ask(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        purpose: Purpose,
        tools: Sequence[Mapping[str, Any]] = (),
        json_mode: bool = False,
    ) -> ModelReply:
        """One model call, drawn on the run's model budget first."""
        state, parts = self.state, self._parts
        answer = await self._budget.next_call()
        if not answer.allowed:
            raise _ModelUnavailable(
                f"the run's model budget is spent: {answer.limit} is {answer.maximum} and the "
                f"run has used {answer.used} (the policy's model_limits)",
                learned=True,
            )
        asked = time.monotonic()
        tracer = parts.gateway.tracer
        try:
            if tracer is None:
                reply = await parts.model.complete(
                    messages, tools=tools or None, json_mode=json_mode
                )
            else:
                with tracer.chat(
                    model=parts.model.model,
                    server=urlsplit(parts.model.settings.base_url or "").hostname,
                    messages=messages,
                    purpose=purpose,
                ) as chat:
                    reply = await parts.model.complete(
                        messages, tools=tools or None, json_mode=json_mode
                    )
                    chat.reply(reply)
        except ModelError as exc:
            parts.metrics.model_failed(
                model=parts.model.model,
                reason=exc.code.value,
                duration_s=time.monotonic() - asked,
                attempts=exc.attempts,
            )
            raise _ModelUnavailable(
                f"no answer from the model: {exc.detail}", learned=False
            ) from exc
        state.model_calls += 1
        state.usage = state.usage + reply.usage
        self._budget.used(reply.usage.total_tokens)
        self._reporter.emit(
            ModelTurn(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                purpose=purpose,
                content=clip(reply.content, LOG_TEXT) if reply.content else reply.content,
                tool_calls=reply.tool_calls,
                finish_reason=reply.finish_reason,
                usage=reply.usage,
                total_tokens=state.usage.total_tokens,
                duration_s=reply.duration_s,
                attempts=reply.attempts,
            )
        )
        return reply

    def _approval_pending(self, request: ApprovalRequest) -> None:
        self._reporter.emit(
            ApprovalPending(
                run_id=self.state.run_id,
                at=self._reporter.now(),
                call_id=request.call_id or "",
                request_id=request.id,
                tool=request.tool,
                reason=request.reason,
            )
        )

    # -- detection -----------------------------------------------------------

    def _detect(self, outcomes: Sequence[CallOutcome]) -> None:
        """Look for loops and abuse; intervene once, then end the run."""
        state = self.state
        state.detection, finding = observe(state.detection, outcomes, self._config.detection)
        if finding is None:
            return
        final = state.interventions >= 1
        self._reporter.emit(
            Intervened(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                pattern=finding.pattern,
                detail=finding.detail,
                final=final,
            )
        )
        if final:
            raise _Ended(
                RunStatus.FAILED,
                f"stopped by loop detection ({finding.pattern}): {finding.detail}, "
                "after one warning",
            )
        state.interventions += 1
        state.detection = state.detection.reset()
        self._say({"role": "user", "content": _intervention(finding)})

    # -- context -------------------------------------------------------------

    async def _fit_context(self, turn: int) -> None:
        """Summarise older turns when the conversation nears its budget (before ``turn``)."""
        state, config = self.state, self._config

        def plan_now() -> Compaction | None:
            return plan_compaction(
                state.messages,
                budget_tokens=config.context_budget_tokens,
                summarise_at=config.summarise_at,
                keep_recent_turns=config.keep_recent_turns,
                fixed_tokens=self._parts.tool_tokens,
                tokens=state.message_tokens,
            )

        plan = plan_now()
        if plan is None:
            return
        if self._drop_images():
            plan = plan_now()
            if plan is None:
                self._checkpoint()
                return
        old = state.messages[HEAD : plan.end]
        work = f"The goal: {state.goal}\n\nThe work so far:\n{transcript(old)}"
        request = [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": work},
        ]
        reply = await self._ask(request, purpose="summary")
        summary = summary_message(reply.content or "(the summary came back empty)")
        state.messages[HEAD : plan.end] = [summary]
        state.message_tokens[HEAD : plan.end] = [message_tokens(summary)]
        state.summaries += 1
        state.rewrites += 1
        self._reporter.emit(
            ContextSummarised(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=turn,
                summarised_messages=len(old),
                tokens_before=plan.tokens_before,
                tokens_after=self._parts.tool_tokens + sum(state.message_tokens),
                summary=clip(summary["content"], LOG_TEXT),
            )
        )
        self._checkpoint()

    def _drop_images(self) -> int:
        """Remove every image message (the first thing to go); how many went.

        Their tool messages still name each artifact, so only pixels are lost.
        """
        state = self.state
        kept = [
            (message, tokens)
            for message, tokens in zip(state.messages, state.message_tokens, strict=True)
            if not is_image_message(message)
        ]
        dropped = len(state.messages) - len(kept)
        if dropped:
            state.rewrites += 1
            state.messages = [message for message, _ in kept]
            state.message_tokens = [tokens for _, tokens in kept]
            self._reporter.notice(f"{dropped} image message(s) dropped to fit the context")
        return dropped

    # -- reflection ------------------------------------------------------------

    async def _judge(self, answer: str) -> None:
        """A final answer: accept it (ending the run), or send the model back to work."""
        state, config = self.state, self._config
        if not config.reflection or state.reflections >= config.max_reflections:
            raise _Ended(RunStatus.COMPLETE, None, answer)
        self._move(RunStatus.REFLECTING)
        state.reflections += 1
        try:
            reply = await self._ask(
                reflection_messages(state.messages), purpose="reflection", json_mode=True
            )
        except _ModelUnavailable as exc:
            self._reporter.notice(f"no reflection ({exc.reason}); the answer stands")
            raise _Ended(RunStatus.COMPLETE, None, answer) from None
        verdict = parse_reflection(reply.content)
        self._reporter.emit(
            Reflected(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                complete=verdict.complete,
                reason=verdict.reason,
                raw=clip(reply.content, LOG_OUTPUT) if reply.content is not None else None,
            )
        )
        if verdict.complete is not False:
            raise _Ended(RunStatus.COMPLETE, None, answer)
        still = f" Still to do: {verdict.missing}" if verdict.missing else ""
        self._say(
            {
                "role": "user",
                "content": f"Not done yet: {verdict.reason}{still} Continue working on the "
                "goal, then give your final answer.",
            }
        )
        await self._memory.lesson(verdict.lesson or f"A first answer fell short: {verdict.reason}")
        self._move(RunStatus.EXECUTING)

    # -- the end ---------------------------------------------------------------

    async def _finish(
        self,
        status: RunStatus,
        reason: str | None,
        answer: str | None,
        *,
        learned: bool = True,
    ) -> RunResult:
        """Record the end: state, memory, budget, workspace, result. Never raises.

        ``learned``: a failure becomes a lesson for later runs (see :class:`_Ended`)."""
        state, parts = self.state, self._parts
        # Checked (and renewed) before anything is released: a process frozen past its
        # lease would otherwise delete the workspace and forget the budget of the run
        # another process now drives, and report an end that was never recorded.
        if not await self._reporter.recorder.renew_lease(state.run_id, self._config.lease_s):
            return self._abandon()
        state.answer = answer
        state.reason = reason
        state.in_flight = []
        self._move(status)
        if status is not RunStatus.CANCELLED:
            # A cancelled run (Ctrl-C) ends at once; a finished or failed one is worth
            # remembering.
            await self._memory.remember(lesson=learned)
        try:
            await self._budget.close()
        except Exception:
            _log.warning("run %s: its model budget could not be released", state.run_id,
                         exc_info=True)  # fmt: skip
        if parts.approvals is not None:
            parts.approvals.unwatch(state.run_id)
        keep = self._config.keep_workspace
        workspace = parts.workspaces.root / state.run_id
        # Off the loop: deleting a workspace of thousands of files takes a while, and the
        # loop serves other runs (and a server's API) meanwhile.
        await asyncio.to_thread(parts.workspaces.close, state.run_id, keep=keep)
        if not keep and parts.artifacts is not None:
            # A run that leaves no workspace behind leaves no artifacts either.
            await asyncio.to_thread(parts.artifacts.delete, state.run_id)
        duration = round(self._worked(), 6)
        self._reporter.emit(self._finished_event(status, answer, reason, duration))
        recorder = self._reporter.recorder
        result = RunResult.of(
            state,
            duration_s=duration,
            workspace=str(workspace) if keep and workspace.is_dir() else None,
            log_path=str(recorder.files.log),
            log=tuple(recorder.events),
        )
        self.result = result
        state.elapsed_s = duration
        await recorder.flush(state, result)
        return result

    # -- bookkeeping -----------------------------------------------------------

    def _say(self, message: dict[str, Any]) -> None:
        self.state.append(message, message_tokens(message))

    def _move(self, status: RunStatus) -> None:
        state = self.state
        if state.status is status:
            return
        check_transition(state.status, status)
        previous, state.status = state.status, status
        self._reporter.emit(
            StateChanged(
                run_id=state.run_id,
                at=self._reporter.now(),
                state=status,
                previous=previous,
                iteration=state.iteration,
            )
        )

    def _checkpoint(self) -> None:
        """Write the state as it is now (the writing goes on in the background)."""
        self.state.elapsed_s = round(self._worked(), 6)
        self._reporter.recorder.checkpoint(self.state)

    async def _name_calls_durably(self, calls: Sequence[ModelToolCall]) -> None:
        """Commit the step naming ``calls`` before any goes out (:class:`LeaseLost` if lost).

        The strict choice when it cannot be committed: a call that ran without its run
        knowing may run again after a restart. So none runs (each is answered
        ``[skipped]``) and the run fails; what it did before is in its last checkpoint.
        """
        state = self.state
        state.elapsed_s = round(self._worked(), 6)
        try:
            await self._reporter.recorder.durable(state)
        except CheckpointFailed as exc:
            why = (
                "the run's checkpoint naming the tool calls about to run could not be written "
                f"({exc.detail}), so none was run"
            )
            state.in_flight = []
            skip_calls(self._parts, state, self._reporter, calls, f"{why}.")
            raise _Ended(
                RunStatus.FAILED,
                f"{why}: a call the checkpoint does not name could run twice after a "
                f"restart. The {len(calls)} call(s) were answered [skipped]; the run's work "
                "before this turn is in its last checkpoint.",
                learned=False,
            ) from exc

    async def _suspend(self) -> None:
        """The orchestrator stops: keep the run as it is (calls in flight included) for a
        resume, and end nothing (workspace, budget, memory stay)."""
        state, parts = self.state, self._parts
        if parts.approvals is not None:
            parts.approvals.unwatch(state.run_id)
        self._reporter.notice("suspended: the orchestrator is stopping; the run resumes later")
        # The state stays as its latest step left it (mid-step, it would count a turn
        # not taken); only the events are written. Time since that step is not counted.
        await self._reporter.recorder.flush_events()

    def _finished_event(
        self, status: RunStatus, answer: str | None, reason: str | None, duration_s: float
    ) -> RunFinished:
        """The run's ``run_finished`` event, its counts as the state has them now."""
        state = self.state
        return RunFinished(
            run_id=state.run_id,
            at=self._reporter.now(),
            status=status,
            answer=answer,
            reason=reason,
            iterations=state.iteration,
            total_tokens=state.usage.total_tokens,
            duration_s=duration_s,
        )

    def not_started(self, status: RunStatus, reason: str) -> RunResult:
        """End a run that never started (its lease could not be taken): nothing is written.

        Its run id's files and checkpoints may be another process's (which took the
        lease first), and without the lease none may be written. The caller gets the
        result and a ``run_finished`` event saying why; the log has neither.
        """
        state = self.state
        _log.warning("run %s did not start: %s", state.run_id, reason)
        state.status, state.reason = status, reason  # this process's copy only
        # A run that never started: no iteration, no token, no time worked.
        self._reporter.emit_live(self._finished_event(status, None, reason, 0.0))
        self.result = RunResult.of(
            state,
            duration_s=0.0,
            workspace=None,
            log_path=str(self._reporter.recorder.files.log),
            log=(),
        )
        return self.result

    def _abandon(self) -> RunResult:
        """Another process took the run's lease: stop, writing and releasing nothing.

        The run's workspace, budget and files are the new holder's now; the
        result returned here (cancelled) is this process's only.
        """
        state, parts = self.state, self._parts
        self.lost = True
        if parts.approvals is not None:
            parts.approvals.unwatch(state.run_id)
        reason = "this process lost the run's lease to another one, which drives it now"
        _log.warning("run %s: %s", state.run_id, reason)
        result = RunResult.of(
            state.model_copy(update={"status": RunStatus.CANCELLED, "reason": reason}),
            duration_s=round(self._worked(), 6),
            workspace=None,
            log_path=str(self._reporter.recorder.files.log),
            log=tuple(self._reporter.recorder.events),
        )
        self.result = result
        return result


def _intervention(finding: Finding) -> str:
    return (
        f"Stockade loop detection: {finding.detail}. This is not making progress. Change your "
        "approach (another tool, other arguments, or fix the cause of the error); if the goal "
        "cannot be reached, give your final answer and say why. The run is stopped if this "
        "happens again."
    )

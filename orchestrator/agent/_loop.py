"""One run of the agent loop, from the goal to its end.

1. **planning**: memories relevant to the goal go into the system prompt;
   the first model turn;
2. **executing**: the turn's tool calls go through the gateway, concurrently,
   at most ``max_tool_calls_per_iteration`` of them (the rest are answered
   ``skipped``); every call gets exactly one tool message, in the model's
   order; loop and abuse detection looks at the answers; the next turn;
3. **reflecting**: a final answer is checked by asking the model whether the
   goal is fully achieved; "not yet" sends it back to work;
4. the end: **complete**, **failed** (a reason always) or **cancelled**.

Before every model call the conversation is kept within its budget (older
turns summarised) and the run's model budget is drawn on (the policy's
``model_limits``). The state is checkpointed after every step. A run never
raises, cancellation aside: whatever happens ends it with a status and a
reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.agent._approvals import ApprovalWatch
from orchestrator.agent._config import AgentConfig
from orchestrator.agent._context import (
    HEAD,
    SUMMARY_PROMPT,
    message_tokens,
    plan_compaction,
    summary_message,
    transcript,
)
from orchestrator.agent._detect import CallOutcome, Finding, observe, outcome_of
from orchestrator.agent._events import (
    AgentEvent,
    ApprovalPending,
    ContextSummarised,
    Intervened,
    MemoryRecalled,
    MemoryStored,
    ModelTurn,
    Notice,
    Purpose,
    RecalledEntry,
    Reflected,
    RunFinished,
    RunStarted,
    StateChanged,
    ToolCallFinished,
    ToolCallStarted,
)
from orchestrator.agent._model_errors import ModelError
from orchestrator.agent._model_reply import ModelReply, ModelToolCall, tool_message
from orchestrator.agent._reflect import parse_reflection, reflection_messages
from orchestrator.agent._result import RunResult
from orchestrator.agent._run_state import RunState
from orchestrator.agent._runlog import RunRecorder
from orchestrator.agent._state import RunStatus, check_transition
from orchestrator.agent.memory import RunMemory
from orchestrator.agent.model import ModelClient
from orchestrator.approvals import ApprovalRequest
from orchestrator.gateway import Gateway
from orchestrator.metrics import AgentMetrics
from orchestrator.policy import ModelBudgetAnswer
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolCall, ToolRegistry, ToolResult, ToolStatus

__all__ = ["RunLoop", "RunParts"]

_log = logging.getLogger(__name__)

_LOG_TEXT = 20_000
_LOG_OUTPUT = 2_000
_LOG_ARGUMENTS = 2_000
_MEMORY_TEXT = 300
# The policy's side of a call, as far as its status tells: None when the call never
# reached the policy, or (rate limited) the decision is not known.
_DECISIONS: Mapping[ToolStatus, str | None] = {
    ToolStatus.DENIED: "deny",
    ToolStatus.APPROVAL_DENIED: "require_approval",
    ToolStatus.RATE_LIMITED: None,
    ToolStatus.UNKNOWN_TOOL: None,
    ToolStatus.INVALID_ARGUMENTS: None,
    ToolStatus.CANCELLED: None,
}
_EMPTY_REPLY = (
    "Your reply had no text and no tool call. Continue working towards the goal, or give "
    "your final answer."
)


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Ended(Exception):
    """Ends the run: ``status`` and ``reason`` (and the answer, when complete)."""

    def __init__(self, status: RunStatus, reason: str | None, answer: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.answer = answer


class _ModelUnavailable(_Ended):
    """A model call could not be made (budget spent, server failing): the run fails."""

    def __init__(self, reason: str) -> None:
        super().__init__(RunStatus.FAILED, reason)


class RunParts:
    """What a run uses, lent by its agent (the platform's gateway, registry and workspaces)."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        gateway: Gateway,
        registry: ToolRegistry,
        workspaces: WorkspaceManager,
        model: ModelClient,
        tools: Sequence[Mapping[str, Any]],
        approvals: ApprovalWatch | None,
        metrics: AgentMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.registry = registry
        self.workspaces = workspaces
        self.model = model
        self.tools = list(tools)
        self.tool_names = tuple(
            spec.name if (spec := registry.get(str(t["function"]["name"]))) else ""
            for t in self.tools
        )
        # Every request carries the schemas: counted once, against every check.
        self.tool_tokens = sum(message_tokens({"content": json.dumps(t)}) for t in self.tools)
        self.approvals = approvals
        self.metrics = metrics
        self.clock = clock


class RunLoop:
    """Drives one run's :class:`RunState` to its end."""

    def __init__(
        self,
        parts: RunParts,
        state: RunState,
        recorder: RunRecorder,
        *,
        memory: RunMemory | None,
        on_event: Callable[[AgentEvent], None] | None,
    ) -> None:
        self._parts = parts
        self._config = parts.config
        self.state = state
        self._recorder = recorder
        self._memory = memory
        self._on_event = on_event
        self._budget = parts.gateway.model_budget(state.run_id)
        self._unrecorded_tokens = 0
        self._next_draw: asyncio.Task[ModelBudgetAnswer] | None = None
        self._started = time.monotonic()
        self.cancel_reason = "the run was cancelled"
        """Why, should the run be cancelled (set by whoever cancels it)."""
        self.result: RunResult | None = None
        """The result, once the run has ended."""

    # -- the run -----------------------------------------------------------

    async def run(self) -> RunResult:
        """Run to the end and return the result. Raises only ``CancelledError`` (after the run
        has been recorded as cancelled)."""
        state = self.state
        state.started_at = self._parts.clock()
        watch = self._parts.approvals
        if watch is not None:
            watch.watch(state.run_id, self._approval_pending)
        self._emit(
            RunStarted(
                run_id=state.run_id,
                at=state.started_at,
                goal=state.goal,
                principal=state.principal,
                model=self._parts.model.model,
                tools=self._parts.tool_names,
            )
        )
        timeout = asyncio.timeout(self._config.run_timeout_s)
        try:
            async with timeout:
                await self._plan()
                await self._turns()
        except _Ended as end:
            return await self._finish(end.status, end.reason, end.answer)
        except asyncio.CancelledError:
            await self._finish(RunStatus.CANCELLED, self.cancel_reason, None)
            raise
        except TimeoutError:
            if not timeout.expired():
                raise
            return await self._finish(
                RunStatus.FAILED,
                f"the run timed out after {self._config.run_timeout_s:g} s (run_timeout_s); "
                "its calls were cancelled",
                None,
            )
        except Exception as exc:
            _log.exception("run %s failed", state.run_id)
            return await self._finish(
                RunStatus.FAILED, f"the agent failed: {type(exc).__name__}: {exc}", None
            )
        raise AssertionError("a run ends by _Ended")  # pragma: no cover

    async def _plan(self) -> None:
        state = self.state
        self._move(RunStatus.PLANNING)
        system = self._config.system_prompt
        recalled = await self._recall()
        if recalled:
            system = f"{system}\n\n{recalled}"
        self._say({"role": "system", "content": system})
        self._say({"role": "user", "content": state.goal})
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
            state.iteration += 1
            await self._fit_context()
            reply = await self._ask(state.messages, purpose="turn", tools=self._parts.tools)
            self._say(reply.to_message())
            if reply.tool_calls:
                state.in_flight = list(reply.tool_calls)
                self._checkpoint()
                if state.status is not RunStatus.EXECUTING:
                    self._move(RunStatus.EXECUTING)
                outcomes = await self._call_tools(reply.tool_calls)
                state.in_flight = []
                self._detect(outcomes)
            elif not (reply.content or "").strip():
                self._say({"role": "user", "content": _EMPTY_REPLY})
                self._detect([])
            else:
                await self._judge(reply.content or "")
            self._checkpoint()

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
        state = self.state
        answer = await self._budget_answer()
        if not answer.allowed:
            raise _ModelUnavailable(
                f"the run's model budget is spent: {answer.limit} is {answer.maximum} and the "
                f"run has used {answer.used} (the policy's model_limits)"
            )
        model = self._parts.model
        asked = time.monotonic()
        try:
            reply = await model.complete(messages, tools=tools or None, json_mode=json_mode)
        except ModelError as exc:
            self._parts.metrics.model_failed(
                model=model.model,
                reason=exc.code.value,
                duration_s=time.monotonic() - asked,
                attempts=exc.attempts,
            )
            raise _ModelUnavailable(f"no answer from the model: {exc.detail}") from exc
        state.model_calls += 1
        state.usage = state.usage + reply.usage
        self._unrecorded_tokens += reply.usage.total_tokens
        self._prefetch_budget()
        self._emit(
            ModelTurn(
                run_id=state.run_id,
                at=self._parts.clock(),
                iteration=state.iteration,
                purpose=purpose,
                content=_clip(reply.content, _LOG_TEXT) if reply.content else reply.content,
                tool_calls=reply.tool_calls,
                finish_reason=reply.finish_reason,
                usage=reply.usage,
                total_tokens=state.usage.total_tokens,
                duration_s=reply.duration_s,
                attempts=reply.attempts,
            )
        )
        return reply

    # The budget lives in the platform's SQLite limit store, one short transaction
    # per method, each worth a thread hop off the loop: ~0.3 ms p50 each, several ms
    # at p90, on the loaded 2-core VM (benchmarks/agent_bench.py). So a model call's
    # tokens are recorded in the same hop as the next call's start, and that hop runs
    # while the turn's tool calls do: the next call is still counted before it is
    # made and the token limit still stops it; other processes see a call's tokens
    # one call late, and a run that ends right after a reply has counted one call it
    # never made (its budget is forgotten at its end anyway). Awaited, the two hops
    # were most of the loop's overhead per iteration (p50 2.5 → 1.8 ms, load ~6).

    def _prefetch_budget(self) -> None:
        self._next_draw = asyncio.create_task(
            asyncio.to_thread(self._draw_budget, self._take_tokens())
        )

    async def _budget_answer(self) -> ModelBudgetAnswer:
        draw, self._next_draw = self._next_draw, None
        if draw is None:
            return await asyncio.to_thread(self._draw_budget, self._take_tokens())
        return await draw

    def _take_tokens(self) -> int:
        tokens, self._unrecorded_tokens = self._unrecorded_tokens, 0
        return tokens

    def _draw_budget(self, tokens: int) -> ModelBudgetAnswer:
        """In a thread: record the last call's tokens, then start the next call."""
        if tokens:
            self._budget.add_tokens(tokens)
        return self._budget.start_call()

    def _release_budget(self, tokens: int) -> None:
        """In a thread: record the last call's tokens, then forget the run's budget."""
        if tokens:
            self._budget.add_tokens(tokens)
        self._parts.gateway.end_run(self.state.run_id)

    # -- tool calls ----------------------------------------------------------

    async def _call_tools(self, calls: Sequence[ModelToolCall]) -> list[CallOutcome]:
        """Run the turn's calls (up to the cap, concurrently) and answer every one, in order."""
        state = self.state
        cap = self._config.max_tool_calls_per_iteration
        running, skipped = calls[:cap], calls[cap:]
        for call in running:
            self._emit(
                ToolCallStarted(
                    run_id=state.run_id,
                    at=self._parts.clock(),
                    iteration=state.iteration,
                    call_id=call.id,
                    tool=self._tool_name(call.name),
                    arguments=_clip(call.arguments, _LOG_ARGUMENTS),
                )
            )
        timed = await asyncio.gather(*(self._call(call) for call in running))
        outcomes = [
            self._answer(call, result, seconds)
            for call, (result, seconds) in zip(running, timed, strict=True)
        ]
        results = [result for result, _ in timed]
        for call in skipped:
            self._skip(call, cap)
        broken = next((r for r in results if r.status is ToolStatus.INFRASTRUCTURE_ERROR), None)
        if broken is not None:
            self._checkpoint()
            raise _Ended(
                RunStatus.FAILED,
                f"the platform could not run {self._tool_name(broken.name)}: {broken.error}",
            )
        return outcomes

    async def _call(self, call: ModelToolCall) -> tuple[ToolResult, float]:
        """The gateway's result, and the time it took (approval waits included)."""
        state = self.state
        started = time.monotonic()
        result = await self._parts.gateway.call(
            ToolCall(
                id=call.id,
                name=call.name or "(none)",
                arguments=call.arguments,
                run_id=state.run_id,
                principal=state.principal,
            )
        )
        return result, time.monotonic() - started

    def _answer(self, call: ModelToolCall, result: ToolResult, seconds: float) -> CallOutcome:
        """The tool message for ``call``, its count, its event, and what detection sees."""
        state = self.state
        limit = self._config.max_tool_output_chars
        content = result.for_model()
        if len(content) > limit:
            content = (
                content[:limit]
                + f"\n[cut: the answer was {len(content)} characters, {limit} are shown]"
            )
        self._say(tool_message(call, content))
        state.count_call(result.status.value)
        tool = self._tool_name(call.name)
        watch = self._parts.approvals
        waited = watch.request_of(state.run_id, call.id) if watch else None
        decision = _DECISIONS.get(result.status, "require_approval" if waited else "allow")
        approved_by = watch.approved_by(state.run_id, call.id) if watch and waited else None
        self._emit(
            ToolCallFinished(
                run_id=state.run_id,
                at=self._parts.clock(),
                iteration=state.iteration,
                call_id=call.id,
                model_id=call.model_id,
                tool=tool,
                status=result.status.value,
                decision=decision,
                approved_by=approved_by,
                duration_s=round(seconds, 6),
                error=result.error,
                output=_clip(result.output, _LOG_OUTPUT),
                retry_after_s=result.retry_after_s,
            )
        )
        return outcome_of(
            tool,
            call.arguments,
            status=result.status.value,
            output=result.output,
            error=result.error,
        )

    def _skip(self, call: ModelToolCall, cap: int) -> None:
        state = self.state
        error = (
            f"at most {cap} tool calls run per turn; this one was not run. Ask for it again "
            "if it is still needed."
        )
        self._say(tool_message(call, f"[skipped]\n{error}"))
        state.count_call("skipped")
        self._emit(
            ToolCallFinished(
                run_id=state.run_id,
                at=self._parts.clock(),
                iteration=state.iteration,
                call_id=call.id,
                model_id=call.model_id,
                tool=self._tool_name(call.name),
                status="skipped",
                decision=None,
                duration_s=0.0,
                error=error,
            )
        )

    def _tool_name(self, name: str) -> str:
        spec = self._parts.registry.get(name) if name else None
        return spec.name if spec is not None else name

    def _approval_pending(self, request: ApprovalRequest) -> None:
        self._emit(
            ApprovalPending(
                run_id=self.state.run_id,
                at=self._parts.clock(),
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
        self._emit(
            Intervened(
                run_id=state.run_id,
                at=self._parts.clock(),
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

    async def _fit_context(self) -> None:
        """Summarise older turns when the conversation nears its budget."""
        state, config = self.state, self._config
        plan = plan_compaction(
            state.messages,
            budget_tokens=config.context_budget_tokens,
            summarise_at=config.summarise_at,
            keep_recent_turns=config.keep_recent_turns,
            fixed_tokens=self._parts.tool_tokens,
            tokens=state.message_tokens,
        )
        if plan is None:
            return
        old = state.messages[HEAD : plan.end]
        request = [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": f"The goal: {state.goal}\n\nThe work so far:\n"
             + transcript(old)},
        ]  # fmt: skip
        reply = await self._ask(request, purpose="summary")
        summary = summary_message(reply.content or "(the summary came back empty)")
        state.messages[HEAD : plan.end] = [summary]
        state.message_tokens[HEAD : plan.end] = [message_tokens(summary)]
        state.summaries += 1
        self._emit(
            ContextSummarised(
                run_id=state.run_id,
                at=self._parts.clock(),
                iteration=state.iteration,
                summarised_messages=len(old),
                tokens_before=plan.tokens_before,
                tokens_after=self._parts.tool_tokens + sum(state.message_tokens),
                summary=_clip(summary["content"], _LOG_TEXT),
            )
        )
        self._checkpoint()

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
            self._notice(f"no reflection ({exc.reason}); the answer stands")
            raise _Ended(RunStatus.COMPLETE, None, answer) from None
        verdict = parse_reflection(reply.content)
        self._emit(
            Reflected(
                run_id=state.run_id,
                at=self._parts.clock(),
                iteration=state.iteration,
                complete=verdict.complete,
                reason=verdict.reason,
                raw=_clip(reply.content, _LOG_OUTPUT) if reply.content is not None else None,
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
        await self._lesson(verdict.lesson or f"A first answer fell short: {verdict.reason}")
        self._move(RunStatus.EXECUTING)

    # -- memory ----------------------------------------------------------------

    async def _recall(self) -> str:
        """The memory section of the system prompt (empty without memory or memories)."""
        memory, state = self._memory, self.state
        if memory is None:
            return ""
        try:
            context = await memory.prompt_context(state.goal)
        except Exception as exc:
            _log.warning("run %s: memory recall failed", state.run_id, exc_info=True)
            self._notice(f"memory recall failed ({type(exc).__name__}: {exc}); going on without")
            return ""
        state.memory_ids = list(context.ids)
        if context.recalled:
            self._emit(
                MemoryRecalled(
                    run_id=state.run_id,
                    at=self._parts.clock(),
                    memories=tuple(
                        RecalledEntry(
                            id=r.memory.id,
                            kind=r.memory.kind.value,
                            score=round(r.score, 4),
                            content=_clip(r.memory.content, _MEMORY_TEXT),
                        )
                        for r in context.recalled
                    ),
                )
            )
        return context.text

    async def _lesson(self, lesson: str) -> None:
        if self._memory is None:
            return
        try:
            record = await self._memory.store_lesson(goal=self.state.goal, lesson=lesson)
        except Exception as exc:
            _log.warning("run %s: storing a lesson failed", self.state.run_id, exc_info=True)
            self._notice(f"the lesson could not be stored ({type(exc).__name__}: {exc})")
            return
        self._stored("lesson", record.id, record.content)

    async def _remember(self) -> None:
        memory, state = self._memory, self.state
        if memory is None:
            return
        success = state.status is RunStatus.COMPLETE
        try:
            if not success:
                await self._lesson(_failure_lesson(state))
            record = await memory.remember_run(
                goal=state.goal,
                success=success,
                outcome=state.reason or "the goal was reached",
                answer=state.answer,
                metadata={
                    "iterations": state.iteration,
                    "tool_calls": sum(state.tool_calls.values()),
                },
            )
        except Exception as exc:
            _log.warning("run %s: remembering the run failed", state.run_id, exc_info=True)
            self._notice(f"the run could not be remembered ({type(exc).__name__}: {exc})")
            return
        self._stored("run", record.id, record.content)

    def _stored(self, kind: str, memory_id: int, content: str) -> None:
        self._emit(
            MemoryStored(
                run_id=self.state.run_id,
                at=self._parts.clock(),
                kind=kind,
                memory_id=memory_id,
                content=_clip(content, _MEMORY_TEXT),
            )
        )

    # -- the end ---------------------------------------------------------------

    async def _finish(self, status: RunStatus, reason: str | None, answer: str | None) -> RunResult:
        """Record the end: state, memory, budget, workspace, result. Never raises."""
        state, parts = self.state, self._parts
        state.answer = answer
        state.reason = reason
        state.in_flight = []
        self._move(status)
        if status is not RunStatus.CANCELLED:
            # A cancelled run (Ctrl-C) ends at once; a finished or failed one is worth
            # remembering.
            await self._remember()
        try:
            if self._next_draw is not None:
                # Drawn for a call that will not be made; it only has to finish.
                await asyncio.shield(self._next_draw)
            await asyncio.to_thread(self._release_budget, self._take_tokens())
        except Exception:
            _log.warning("run %s: its model budget could not be released", state.run_id,
                         exc_info=True)  # fmt: skip
        if parts.approvals is not None:
            parts.approvals.unwatch(state.run_id)
        keep = self._config.keep_workspace
        workspace = parts.workspaces.root / state.run_id
        parts.workspaces.close(state.run_id, keep=keep)
        duration = time.monotonic() - self._started
        self._emit(
            RunFinished(
                run_id=state.run_id,
                at=parts.clock(),
                status=status,
                answer=answer,
                reason=reason,
                iterations=state.iteration,
                total_tokens=state.usage.total_tokens,
                duration_s=round(duration, 6),
            )
        )
        result = RunResult.of(
            state,
            duration_s=round(duration, 6),
            workspace=str(workspace) if keep and workspace.is_dir() else None,
            log_path=str(self._recorder.files.log),
            log=tuple(self._recorder.events),
        )
        self.result = result
        state.elapsed_s = round(duration, 6)
        await self._recorder.flush(state, result)
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
        self._emit(
            StateChanged(
                run_id=state.run_id,
                at=self._parts.clock(),
                state=status,
                previous=previous,
                iteration=state.iteration,
            )
        )

    def _notice(self, message: str) -> None:
        self._emit(Notice(run_id=self.state.run_id, at=self._parts.clock(), message=message))

    def _emit(self, event: AgentEvent) -> None:
        self._recorder.event(event)
        self._parts.metrics.observe(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                # The watcher's bug must not end the run.
                _log.exception("on_event failed on %s", event.type)

    def _checkpoint(self) -> None:
        """Write the state as it is now (the writing goes on in the background)."""
        self.state.elapsed_s = round(time.monotonic() - self._started, 6)
        self._recorder.checkpoint(self.state)


def _intervention(finding: Finding) -> str:
    return (
        f"Stockade loop detection: {finding.detail}. This is not making progress. Change your "
        "approach (another tool, other arguments, or fix the cause of the error); if the goal "
        "cannot be reached, give your final answer and say why. The run is stopped if this "
        "happens again."
    )


def _failure_lesson(state: RunState) -> str:
    return f"An earlier run on this goal failed: {state.reason}. Avoid what led there."

"""A turn's tool calls: through the gateway, concurrently, each answered once, in order.

At most ``max_tool_calls_per_iteration`` calls run, all at once; each
goes to the gateway under the run's id and principal with Stockade's unique
call id. Every call the model asked for gets exactly one tool message, in the
model's order, under the id the model knows it by: the gateway's result as
the model reads it (cut at ``max_tool_output_chars``), or ``[skipped]`` for a
call past the cap, which never runs (:func:`skip_calls` answers a whole turn
so, when it may not run), or (a resumed run) ``[interrupted]`` for a
call that may have run before the orchestrator stopped and is not run again
(see ``_resume``). Each tool message names the call's
artifacts, one line each; for a model that reads images, one user message
after the batch's tool messages shows the image ones (``_images``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.agent._context import message_tokens
from orchestrator.agent._detect import CallOutcome, outcome_of
from orchestrator.agent._events import (
    LOG_OUTPUT,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    clip,
)
from orchestrator.agent._images import ShownImage, image_message, pick
from orchestrator.agent._model_reply import ModelToolCall, tool_message
from orchestrator.agent._parts import Reporter, RunParts
from orchestrator.agent._run_state import RunState
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

__all__ = ["TurnCalls", "call_tools", "skip_calls"]

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


@dataclass(frozen=True, kw_only=True)
class TurnCalls:
    """What a turn's calls came to."""

    outcomes: list[CallOutcome]
    """The calls that ran, as loop detection sees them."""
    broken: ToolResult | None
    """The first call the platform itself could not run (its retries spent), if any."""


async def call_tools(
    parts: RunParts,
    state: RunState,
    reporter: Reporter,
    calls: Sequence[ModelToolCall],
    *,
    settled: Mapping[str, str] | None = None,
) -> TurnCalls:
    """Run ``calls`` (up to the cap, concurrently) and answer every one in ``state``, in order.

    ``settled`` answers calls by id without running them (``[interrupted]`` and the
    text given): calls of a resumed run that may have run already.
    """
    return await _Turn(parts, state, reporter, settled or {}).run(calls)


def skip_calls(
    parts: RunParts,
    state: RunState,
    reporter: Reporter,
    calls: Sequence[ModelToolCall],
    why: str,
) -> None:
    """Answer every call of ``calls`` ``[skipped]`` with ``why``, running none of them."""
    turn = _Turn(parts, state, reporter, {})
    for call in calls:
        turn.skip(call, why)


_INTERRUPTED = "interrupted"


class _Turn:
    def __init__(
        self, parts: RunParts, state: RunState, reporter: Reporter, settled: Mapping[str, str]
    ) -> None:
        self._parts = parts
        self._state = state
        self._reporter = reporter
        self._settled = settled

    async def run(self, calls: Sequence[ModelToolCall]) -> TurnCalls:
        state, reporter = self._state, self._reporter
        cap = self._parts.config.max_tool_calls_per_iteration
        running, skipped = calls[:cap], calls[cap:]
        for call in running:
            if call.id in self._settled:
                continue
            reporter.emit(
                ToolCallStarted(
                    run_id=state.run_id,
                    at=reporter.now(),
                    iteration=state.iteration,
                    call_id=call.id,
                    tool=self._parts.tool_name(call.name),
                    arguments=clip(call.arguments, LOG_OUTPUT),
                )
            )
        timed = await asyncio.gather(*(self._call(call) for call in running))
        outcomes = [
            self._interrupted(call, self._settled[call.id])
            if call.id in self._settled
            else self._answer(call, result, seconds)
            for call, (result, seconds) in zip(running, timed, strict=True)
        ]
        for call in skipped:
            self._skip(call, cap)
        if self._parts.accepts_images:
            await self._show_images(running, [result for result, _ in timed])
        broken = next(
            (result for result, _ in timed if result.status is ToolStatus.INFRASTRUCTURE_ERROR),
            None,
        )
        return TurnCalls(outcomes=outcomes, broken=broken)

    async def _call(self, call: ModelToolCall) -> tuple[ToolResult, float]:
        """The gateway's result, and the time it took (approval waits included)."""
        if call.id in self._settled:  # not run again: answered by _interrupted
            error = self._settled[call.id]
            return ToolResult(
                call_id=call.id, name=call.name, status=ToolStatus.CANCELLED, error=error
            ), 0.0
        started = time.monotonic()
        result = await self._parts.gateway.call(
            ToolCall(
                id=call.id,
                name=call.name or "(none)",
                arguments=call.arguments,
                run_id=self._state.run_id,
                principal=self._state.principal,
            ),
            on_output=lambda chunk: self._reporter.emit_live(
                ToolOutput(
                    run_id=self._state.run_id,
                    at=self._reporter.now(),
                    call_id=call.id,
                    stream=chunk.stream,
                    text=chunk.text,
                )
            ),
        )
        return result, time.monotonic() - started

    def _answer(self, call: ModelToolCall, result: ToolResult, seconds: float) -> CallOutcome:
        """The tool message for ``call``, its count, its event, and what detection sees."""
        parts, state = self._parts, self._state
        limit = parts.config.max_tool_output_chars
        content = result.for_model()
        if len(content) > limit:
            cut = f"\n[cut: the answer was {len(content)} characters, {limit} are shown]"
            content = content[:limit] + cut
        self._say(tool_message(call, content))
        state.count_call(result.status.value)
        tool = parts.tool_name(call.name)
        watch = parts.approvals
        waited = watch.request_of(state.run_id, call.id) if watch else None
        self._reporter.emit(
            ToolCallFinished(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                call_id=call.id,
                model_id=call.model_id,
                tool=tool,
                status=result.status.value,
                decision=_DECISIONS.get(result.status, "require_approval" if waited else "allow"),
                approved_by=watch.approved_by(state.run_id, call.id) if watch and waited else None,
                duration_s=round(seconds, 6),
                error=result.error,
                output=clip(result.output, LOG_OUTPUT),
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

    async def _show_images(
        self, calls: Sequence[ModelToolCall], results: Sequence[ToolResult]
    ) -> None:
        """One user message with the batch's image artifacts, after all its tool messages."""
        store = self._parts.artifacts
        wanted = pick(
            [
                (call.model_id, artifact)
                for call, result in zip(calls, results, strict=True)
                for artifact in result.artifacts
            ]
        )
        if store is None or not wanted:
            return
        run_id = self._state.run_id

        def read() -> list[ShownImage]:
            shown = []
            for tool_call_id, artifact in wanted:
                try:
                    data = store.read(run_id, artifact)
                except OSError:  # gone meanwhile: its tool message still names it
                    continue
                shown.append(ShownImage(tool_call_id=tool_call_id, artifact=artifact, data=data))
            return shown

        images = await asyncio.to_thread(read)
        if images:
            self._say(image_message(images))

    def _interrupted(self, call: ModelToolCall, error: str) -> CallOutcome:
        """Answer a call that may have run before a restart, without running it again."""
        state = self._state
        self._say(tool_message(call, f"[{_INTERRUPTED}]\n{error}"))
        state.count_call(_INTERRUPTED)
        tool = self._parts.tool_name(call.name)
        self._reporter.emit(
            ToolCallFinished(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                call_id=call.id,
                model_id=call.model_id,
                tool=tool,
                status=_INTERRUPTED,
                decision=None,
                duration_s=0.0,
                error=error,
            )
        )
        return outcome_of(tool, call.arguments, status=_INTERRUPTED, output="", error=error)

    def _skip(self, call: ModelToolCall, cap: int) -> None:
        self.skip(
            call,
            f"at most {cap} tool calls run per turn; this one was not run. Ask for it again "
            "if it is still needed.",
        )

    def skip(self, call: ModelToolCall, error: str) -> None:
        """Answer ``call`` ``[skipped]`` with ``error``: it was not run."""
        state = self._state
        self._say(tool_message(call, f"[skipped]\n{error}"))
        state.count_call("skipped")
        self._reporter.emit(
            ToolCallFinished(
                run_id=state.run_id,
                at=self._reporter.now(),
                iteration=state.iteration,
                call_id=call.id,
                model_id=call.model_id,
                tool=self._parts.tool_name(call.name),
                status="skipped",
                decision=None,
                duration_s=0.0,
                error=error,
            )
        )

    def _say(self, message: dict[str, Any]) -> None:
        self._state.append(message, message_tokens(message))

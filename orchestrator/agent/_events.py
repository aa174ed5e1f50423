"""What a run reports as it goes: typed events, one per thing that happened.

The CLI shows them as progress, the execution log stores them (one JSON line
each, ``runs/<run_id>/log.jsonl`` in the state directory), and later the HTTP
API streams them. Each is a strict, serialisable model; ``type`` tells them
apart (:data:`AgentEvent` parses any of them back).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import Field, TypeAdapter

from orchestrator.agent._model_reply import ModelToolCall, TokenUsage
from orchestrator.agent._state import RunStatus
from orchestrator.strict import StrictModel

__all__ = [
    "AgentEvent",
    "ApprovalPending",
    "ContextSummarised",
    "Intervened",
    "MemoryRecalled",
    "MemoryStored",
    "ModelTurn",
    "Notice",
    "Purpose",
    "RecalledEntry",
    "Reflected",
    "RunFinished",
    "RunStarted",
    "StateChanged",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolOutput",
    "clip",
    "event_adapter",
]

LOG_TEXT = 20_000
"""Longest model text an event keeps."""
LOG_OUTPUT = 2_000
"""Longest tool output, arguments or reflection an event keeps."""
LOG_MEMORY = 300
"""Longest memory content an event keeps."""


def clip(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


Purpose: TypeAlias = Literal["turn", "reflection", "summary"]
"""Why the model was asked: a turn of the run, a reflection, or a summary of older turns."""


class _Event(StrictModel):
    run_id: str
    """The run."""
    at: float
    """Unix time it happened."""


class RunStarted(_Event):
    """A run began."""

    type: Literal["run_started"] = "run_started"
    goal: str
    """What the run is asked to achieve."""
    principal: str
    """Who it acts for."""
    model: str
    """The model's name."""
    tools: tuple[str, ...]
    """The tools offered to the model."""
    trace_id: str | None = None
    """The run's OpenTelemetry trace id (32 hex digits), when tracing is on."""


class StateChanged(_Event):
    """The run moved to another state."""

    type: Literal["state"] = "state"
    state: RunStatus
    """The new state."""
    previous: RunStatus
    """The state it left."""
    iteration: int
    """Model turns so far."""


class RecalledEntry(StrictModel):
    """One memory recalled into the prompt."""

    id: int
    """Its id in the long-term store."""
    kind: str
    """``run``, ``lesson``, ``fact``…"""
    score: float
    """Its similarity to the goal."""
    content: str
    """What it says (cut to a few hundred characters)."""


class MemoryRecalled(_Event):
    """Memories relevant to the goal went into the system prompt."""

    type: Literal["memory_recalled"] = "memory_recalled"
    memories: tuple[RecalledEntry, ...]
    """Best first."""


class ModelTurn(_Event):
    """The model answered (a turn of the run, a reflection or a summary)."""

    type: Literal["model_turn"] = "model_turn"
    iteration: int
    """The turn this belongs to."""
    purpose: Purpose
    """Why the model was asked."""
    content: str | None
    """What it wrote."""
    tool_calls: tuple[ModelToolCall, ...] = ()
    """The calls it asked for."""
    finish_reason: str | None = None
    """Why it stopped, as the server said."""
    usage: TokenUsage
    """Tokens of this answer."""
    total_tokens: int
    """Tokens of the run so far."""
    duration_s: float
    """Time the answer took, retries included."""
    attempts: int
    """Requests it took."""


class ToolCallStarted(_Event):
    """A tool call went to the gateway."""

    type: Literal["tool_call_started"] = "tool_call_started"
    iteration: int
    """The model turn that asked for it."""
    call_id: str
    """Stockade's unique id for the call (the audit log's and the approvals')."""
    tool: str
    """The tool's registered name (or the name the model wrote, when there is no such tool)."""
    arguments: str
    """The arguments as the model wrote them (cut when long)."""


class ToolCallFinished(_Event):
    """A tool call came back (or was skipped)."""

    type: Literal["tool_call_finished"] = "tool_call_finished"
    iteration: int
    """The model turn that asked for it."""
    call_id: str
    """Stockade's unique id for the call."""
    model_id: str
    """The model's id for it (its tool message answers this id)."""
    tool: str
    """The tool."""
    status: str
    """A :class:`~orchestrator.tools.ToolStatus` value, or ``skipped`` (past the
    per-turn cap: never sent to the gateway)."""
    decision: str | None
    """The policy's decision: ``allow``, ``deny`` or ``require_approval`` (the call waited for
    an approver; ``status`` says how that ended). None when the call never reached the policy
    (unknown tool, invalid arguments, skipped) or was rate limited. A call an approvers-file
    rule approved before the agent's :class:`~orchestrator.agent.ApprovalWatch` saw it shows
    as ``allow``."""
    approved_by: str | None = None
    """Who approved the call, when one of the agent's own approvers did (see
    :class:`~orchestrator.agent.ApprovalWatch`): ``auto:<rule>``, a user at this terminal."""
    duration_s: float
    """Time the call took, approval waits included."""
    error: str | None = None
    """What went wrong, as the model reads it."""
    output: str = ""
    """The tool's output (cut when long)."""
    retry_after_s: float | None = None
    """For ``rate_limited``: when trying again can succeed."""


class ToolOutput(_Event):
    """A piece of a running tool call's output, as it came (live only: never in the run's log
    or its checkpoints; the call's result is in :class:`ToolCallFinished`)."""

    type: Literal["tool_output"] = "tool_output"
    call_id: str
    """The running call."""
    stream: Literal["stdout", "stderr", "notice"]
    """Which stream wrote it; ``notice``: the platform's (live output capped, chunks dropped)."""
    text: str
    """UTF-8 (invalid bytes replaced); untrusted: strip control sequences before showing it
    (:func:`orchestrator.display.for_display`)."""


class ApprovalPending(_Event):
    """A call waits for a person's decision."""

    type: Literal["approval_pending"] = "approval_pending"
    call_id: str
    """The waiting call."""
    request_id: str
    """The approval request (``stockade approvals approve|deny <request_id>``)."""
    tool: str
    """The tool."""
    reason: str
    """Why the policy asks for approval."""


class ContextSummarised(_Event):
    """Older turns were summarised to keep the conversation within its budget."""

    type: Literal["context_summarised"] = "context_summarised"
    iteration: int
    """The turn about to be asked for."""
    summarised_messages: int
    """Messages replaced by the summary."""
    tokens_before: int
    """Estimated tokens of the conversation before."""
    tokens_after: int
    """Estimated tokens after."""
    summary: str
    """The summary that replaced them."""


class Reflected(_Event):
    """The model said whether the goal is fully achieved."""

    type: Literal["reflection"] = "reflection"
    iteration: int
    """The turn whose answer was judged."""
    complete: bool | None
    """The verdict; none when the answer could not be read (the final answer then stands)."""
    reason: str
    """Why, in the model's words (or why no verdict was read)."""
    raw: str | None
    """What the model wrote (cut when long)."""


class Intervened(_Event):
    """Loop or abuse detection found a pattern."""

    type: Literal["intervention"] = "intervention"
    iteration: int
    """The turn after which it was found."""
    pattern: str
    """``repeated_call``, ``repeated_error``, ``alternating``, ``no_progress`` or ``denials``."""
    detail: str
    """What was seen."""
    final: bool
    """True when this ends the run (the model was warned once already)."""


class MemoryStored(_Event):
    """Something was remembered for later runs."""

    type: Literal["memory_stored"] = "memory_stored"
    kind: str
    """``run`` or ``lesson``."""
    memory_id: int
    """Its id in the long-term store."""
    content: str
    """What was stored (cut when long)."""


class Notice(_Event):
    """Something worth knowing that changes nothing (memory unavailable, reflection skipped)."""

    type: Literal["notice"] = "notice"
    message: str
    """What happened."""


class RunFinished(_Event):
    """The run ended."""

    type: Literal["run_finished"] = "run_finished"
    status: RunStatus
    """``complete``, ``failed`` or ``cancelled``."""
    answer: str | None
    """The final answer, when there is one."""
    reason: str | None
    """Why it ended that way (always set for ``failed`` and ``cancelled``)."""
    iterations: int
    """Model turns."""
    total_tokens: int
    """Tokens used."""
    duration_s: float
    """Wall-clock time of the run."""


AgentEvent: TypeAlias = Annotated[
    RunStarted
    | StateChanged
    | MemoryRecalled
    | ModelTurn
    | ToolCallStarted
    | ToolCallFinished
    | ToolOutput
    | ApprovalPending
    | ContextSummarised
    | Reflected
    | Intervened
    | MemoryStored
    | Notice
    | RunFinished,
    Field(discriminator="type"),
]
"""Any event of a run."""

event_adapter: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)
"""Parses an event back from its JSON (``event_adapter.validate_json(line)``)."""

"""A run's timeline: its events and its calls' audit records, joined into items to show.

The run's execution log (the agent's events) says what the run did: model
turns, tool calls, reflections, interventions, summaries, the end. The
audit log says what the gateway decided about each call: the rule, the
approval (who, when, with what note), the sandbox profile, the artifacts.
:func:`build_timeline` joins the two by call id, in the order the run did
things; a call the audit log has and the run's log does not yet (its events
are written with the run's next checkpoint) still shows, at the end.

Everything here is untrusted text (what a model wrote, what a tool printed):
it is kept as text, with terminal control sequences removed
(:func:`inert_text`), and the templates escape it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.agent import (
    AgentEvent,
    ApprovalPending,
    ContextSummarised,
    Intervened,
    MemoryRecalled,
    MemoryStored,
    ModelTurn,
    Notice,
    Reflected,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from orchestrator.audit.timeline import CallEntry
from orchestrator.display import for_display

__all__ = [
    "LINES_SHOWN",
    "OUTPUT_PREVIEW",
    "ApprovalView",
    "ArtifactView",
    "CallItem",
    "Item",
    "Timeline",
    "build_timeline",
    "inert_text",
]

OUTPUT_PREVIEW = 2_000
"""Longest output, argument or model text an item shows (the run's log keeps as much)."""
LINES_SHOWN = 50
"""Most workspace paths (and refusals) a call's item lists."""


def inert_text(value: Any, limit: int = OUTPUT_PREVIEW) -> str:
    """``value`` as text to show: control sequences removed, cut to ``limit`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    text = for_display(text.replace("\r\n", "\n"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, kw_only=True)
class ApprovalView:
    """A call's approval: asked why, decided by whom, when, with what note."""

    request_id: str
    reason: str
    """Why the policy asked (its reason)."""
    requested_at: str
    """When it was asked (the audit record's UTC time)."""
    status: str = "pending"
    """``pending``, ``approved``, ``denied`` or ``expired``."""
    decided_by: str | None = None
    decided_at: str | None = None
    note: str | None = None
    scope: str | None = None
    """``once``, ``run`` or ``run-identical`` (a standing grant)."""
    edited: str | None = None
    """The arguments the approver replaced the model's with."""


@dataclass(frozen=True, kw_only=True)
class ArtifactView:
    """A file a call left under ``outputs/``."""

    id: str
    name: str
    media_type: str
    size: int


@dataclass(frozen=True, kw_only=True)
class Item:
    """One thing the run did, as shown: ``kind`` selects how, ``data`` holds the values."""

    key: str
    """Stable across refreshes: the page replaces an item only when its ``version`` changes."""
    kind: str
    """``turn``, ``call``, ``reflection``, ``intervention``, ``summary``, ``memory``,
    ``notice`` or ``final``."""
    at: float
    """Unix time it happened (a call: when it began)."""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A digest of what the item shows."""
        document = json.dumps(self.data, sort_keys=True, default=repr)
        return hashlib.sha256(document.encode("utf-8")).hexdigest()[:16]


@dataclass(kw_only=True)
class CallItem:
    """A tool call being assembled from its events and its audit records."""

    call_id: str
    at: float
    iteration: int | None = None
    tool: str = "?"
    arguments: str = ""
    status: str = "running"
    decision: str | None = None
    rule: str | None = None
    policy_reason: str | None = None
    approval: ApprovalView | None = None
    duration_s: float | None = None
    profile: str | None = None
    runtime: str | None = None
    exit_code: int | None = None
    retries: int | None = None
    output: str = ""
    error: str | None = None
    artifacts: list[ArtifactView] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    """The workspace paths the call changed, as the audit log recorded them (cut)."""
    files_rejected: list[str] = field(default_factory=list)
    """What the sandbox sent back and the host refused, with the reasons (cut)."""

    def item(self) -> Item:
        data = {name: value for name, value in vars(self).items() if name != "at"}
        return Item(key=f"call-{self.call_id}", kind="call", at=self.at, data=data)


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """A run, as its page shows it."""

    items: tuple[Item, ...]
    model: str | None
    """The run's model (from its first event)."""
    tools_offered: tuple[str, ...]
    model_turns: int
    tool_calls: int
    finished: bool
    """Its final event is in: nothing more will come."""
    trace_id: str | None = None
    """The run's OpenTelemetry trace id, when it was traced."""


def _approval(call: CallItem, records: Sequence[Mapping[str, Any]]) -> None:
    """Fill ``call.approval`` from the call's ``approval_requested``/``approval_decided``."""
    for record in records:
        info = record.get("approval") or {}
        request_id = str(info.get("request_id", "?"))
        if record.get("event") == "approval_requested":
            call.approval = ApprovalView(
                request_id=request_id,
                reason=inert_text(record.get("reason")),
                requested_at=str(record.get("ts", "")),
            )
            continue
        requested = call.approval
        edited = info.get("edited_arguments")
        call.approval = ApprovalView(
            request_id=request_id,
            reason=requested.reason if requested else "",
            requested_at=requested.requested_at if requested else "",
            status=str(info.get("status", "?")),
            decided_by=info.get("decided_by"),
            decided_at=str(record.get("ts", "")),
            note=inert_text(record.get("reason")) or None,
            scope=info.get("scope"),
            edited=None if edited is None else inert_text(edited),
        )


def _outcome(call: CallItem, record: Mapping[str, Any], runtimes: Mapping[str, str]) -> None:
    """Fill ``call`` from the gateway's ``call`` record of its outcome."""
    call.status = str(record.get("status", call.status))
    call.decision = record.get("decision") or call.decision
    call.rule = record.get("rule") or call.rule
    call.policy_reason = inert_text(record.get("reason")) or None
    call.duration_s = record.get("duration_s", call.duration_s)
    call.exit_code = record.get("exit_code")
    call.retries = record.get("retries")
    call.profile = record.get("sandbox_profile")
    call.runtime = runtimes.get(call.profile or "")
    if record.get("arguments") is not None:
        call.arguments = inert_text(record["arguments"])  # redacted as the policy says
    if not call.output and record.get("output"):
        call.output = inert_text(record["output"])
    if record.get("error") and not call.error:
        call.error = inert_text(record["error"])
    info = record.get("approval")
    if info and call.approval is not None and info.get("scope"):
        call.approval = replace(call.approval, scope=info["scope"])
    call.artifacts = [
        ArtifactView(
            id=str(artifact.get("id", "")),
            name=inert_text(artifact.get("name"), 300),
            media_type=str(artifact.get("media_type", "")),
            size=int(artifact.get("size", 0)),
        )
        for artifact in record.get("artifacts") or ()
        if isinstance(artifact, Mapping)
    ]
    call.files_changed = _recorded_lines(record.get("files_changed"))
    call.files_rejected = _recorded_lines(record.get("files_rejected"))


def _recorded_lines(value: Any) -> list[str]:
    """A list the audit log recorded (paths, refusals) as lines to show: the first
    :data:`LINES_SHOWN`, then how many more; a list the log bounded, by its size."""
    if isinstance(value, list):
        shown = [inert_text(str(line), 300) for line in value[:LINES_SHOWN]]
        if len(value) > LINES_SHOWN:
            shown.append(f"… and {len(value) - LINES_SHOWN} more (the audit log has them all)")
        return shown
    if isinstance(value, Mapping):
        return [f"{value.get('bytes', '?')} bytes of them, kept in the audit log as a SHA-256"]
    return []


def _turn(event: ModelTurn) -> Item:
    return Item(
        key=f"turn-{event.iteration}-{event.purpose}-{event.at}",
        kind="turn",
        at=event.at,
        data={
            "iteration": event.iteration,
            "purpose": event.purpose,
            "content": inert_text(event.content),
            "asked": [call.name for call in event.tool_calls],
            "prompt_tokens": event.usage.prompt_tokens,
            "completion_tokens": event.usage.completion_tokens,
            "tokens": event.usage.total_tokens,
            "estimated": event.usage.estimated,
            "total_tokens": event.total_tokens,
            "latency_s": event.duration_s,
            "attempts": event.attempts,
            "finish_reason": event.finish_reason,
        },
    )


def _reflection(event: Reflected) -> Item:
    return Item(
        key=f"reflection-{event.iteration}-{event.at}",
        kind="reflection",
        at=event.at,
        data={
            "iteration": event.iteration,
            "complete": event.complete,
            "reason": inert_text(event.reason),
        },
    )


def _intervention(event: Intervened) -> Item:
    return Item(
        key=f"intervention-{event.iteration}-{event.at}",
        kind="intervention",
        at=event.at,
        data={
            "iteration": event.iteration,
            "pattern": event.pattern,
            "detail": inert_text(event.detail),
            "final": event.final,
        },
    )


def _summary(event: ContextSummarised) -> Item:
    return Item(
        key=f"summary-{event.iteration}-{event.at}",
        kind="summary",
        at=event.at,
        data={
            "iteration": event.iteration,
            "messages": event.summarised_messages,
            "before": event.tokens_before,
            "after": event.tokens_after,
            "summary": inert_text(event.summary),
        },
    )


def _recalled(event: MemoryRecalled) -> Item:
    text = "; ".join(f"[{m.kind}] {m.content}" for m in event.memories)
    return Item(
        key=f"memory-{event.type}-{event.at}",
        kind="memory",
        at=event.at,
        data={"label": f"{len(event.memories)} memories recalled", "text": inert_text(text)},
    )


def _stored(event: MemoryStored) -> Item:
    return Item(
        key=f"memory-{event.type}-{event.at}",
        kind="memory",
        at=event.at,
        data={"label": f"{event.kind} remembered", "text": inert_text(event.content)},
    )


def _notice(event: Notice) -> Item:
    return Item(
        key=f"notice-{event.at}",
        kind="notice",
        at=event.at,
        data={"message": inert_text(event.message)},
    )


def _final(event: RunFinished) -> Item:
    return Item(
        key="final",
        kind="final",
        at=event.at,
        data={
            "status": event.status.value,
            "answer": inert_text(event.answer, 20_000),
            "reason": inert_text(event.reason),
            "iterations": event.iterations,
            "total_tokens": event.total_tokens,
            "duration_s": event.duration_s,
        },
    )


# The events shown as items of their own (a call's events make one item: CallItem).
_ITEMS: dict[type[Any], Callable[[Any], Item]] = {
    ModelTurn: _turn,
    Reflected: _reflection,
    Intervened: _intervention,
    ContextSummarised: _summary,
    MemoryRecalled: _recalled,
    MemoryStored: _stored,
    Notice: _notice,
    RunFinished: _final,
}


def _merge_audit(call: CallItem, entry: CallEntry, runtimes: Mapping[str, str]) -> None:
    """Add what the audit log says of the call to what its events said."""
    if entry.tool and call.tool == "?":
        call.tool = entry.tool
    _approval(call, entry.approvals)
    if entry.outcome is not None:
        _outcome(call, entry.outcome, runtimes)
    elif entry.approvals and call.approval and call.approval.status == "pending":
        call.status = "waiting for approval"
    elif entry.intents and call.status != "waiting for approval":
        call.status = "running"
    if entry.intents and call.profile is None:
        call.profile = entry.intents[-1].get("sandbox_profile")
        call.runtime = runtimes.get(call.profile or "")


def build_timeline(
    events: Iterable[AgentEvent],
    calls: Iterable[CallEntry],
    runtimes: Mapping[str, str],
) -> Timeline:
    """The run's items in the order it did things.

    ``events`` are the run's (its execution log), ``calls`` the audit log's
    entries of its calls, ``runtimes`` each sandbox profile's OCI runtime.
    """
    slots: list[Item | CallItem] = []
    by_call: dict[str, CallItem] = {}
    model: str | None = None
    offered: tuple[str, ...] = ()
    trace_id: str | None = None
    turns = 0
    finished = False

    def call_of(call_id: str, at: float) -> CallItem:
        found = by_call.get(call_id)
        if found is None:
            found = by_call[call_id] = CallItem(call_id=call_id, at=at)
            slots.append(found)
        return found

    for event in events:
        if isinstance(event, RunStarted):
            model, offered, trace_id = event.model, event.tools, event.trace_id
        elif isinstance(event, ToolCallStarted):
            call = call_of(event.call_id, event.at)
            call.iteration, call.tool = event.iteration, event.tool
            call.arguments = inert_text(event.arguments)
        elif isinstance(event, ApprovalPending):
            call = call_of(event.call_id, event.at)
            call.tool = event.tool
            call.status = "waiting for approval"
        elif isinstance(event, ToolCallFinished):
            call = call_of(event.call_id, event.at)
            call.iteration, call.tool = event.iteration, event.tool
            call.status, call.decision = event.status, event.decision
            call.duration_s = event.duration_s
            call.output = inert_text(event.output)
            call.error = inert_text(event.error) or None
        elif (make := _ITEMS.get(type(event))) is not None:
            item = make(event)
            turns += item.kind == "turn"
            finished = finished or item.kind == "final"
            slots.append(item)
    for entry in calls:
        _merge_audit(call_of(entry.call_id, 0.0), entry, runtimes)
    items = tuple(slot.item() if isinstance(slot, CallItem) else slot for slot in slots)
    return Timeline(
        items=items,
        model=model,
        tools_offered=offered,
        model_turns=turns,
        tool_calls=len(by_call),
        finished=finished,
        trace_id=trace_id,
    )

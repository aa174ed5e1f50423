"""How ``stockade run``, ``stockade runs`` and ``stockade demo`` show a run: progress lines
from its events, then the answer and a summary table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

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
    RunResult,
    RunStarted,
    StateChanged,
    ToolCallFinished,
    ToolOutput,
)
from orchestrator.cli._common import echo_json, echo_untrusted, table
from orchestrator.cli._live_tail import LiveTail
from orchestrator.display import for_display

__all__ = ["ProgressView", "describe_event", "show_result", "summary_rows"]

_ARGUMENTS = 70
_TEXT = 160


def _short(text: str | None, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _calls(event: ModelTurn) -> str:
    if event.purpose != "turn":
        return event.purpose
    if event.tool_calls:
        count = len(event.tool_calls)
        return f"{count} tool call{'s' if count > 1 else ''}"
    return "answer" if (event.content or "").strip() else "empty reply"


def _started(event: RunStarted, _arguments: dict[str, str]) -> str:
    return (
        f"run {event.run_id} · for {event.principal} · model {event.model} · "
        f"{len(event.tools)} tools\ngoal: {_short(event.goal, 300)}"
    )


def _state(event: StateChanged, _arguments: dict[str, str]) -> str | None:
    if event.state.finished or event.state.value == "executing":
        return None  # the run's end has its own line; executing shows as tool calls
    return f"[{event.iteration}] {event.state.value}" if event.iteration else event.state.value


def _recalled(event: MemoryRecalled, _arguments: dict[str, str]) -> str:
    lines = [f"    memory: {len(event.memories)} recalled into the prompt"]
    lines += [f"      {m.kind} ({m.score:.2f}): {_short(m.content, 110)}" for m in event.memories]
    return "\n".join(lines)


def _turn(event: ModelTurn, _arguments: dict[str, str]) -> str:
    line = (
        f"[{event.iteration}] model: {_calls(event)} · {event.usage.total_tokens:,} tokens "
        f"(run {event.total_tokens:,}) · {_duration(event.duration_s)}"
        + (f" · {event.attempts} attempts" if event.attempts > 1 else "")
    )
    if event.purpose == "turn" and event.tool_calls and (event.content or "").strip():
        # What the model says it is doing, before the calls it asks for.
        line += f"\n      “{_short(event.content, _TEXT)}”"
    return line


def _finished_call(event: ToolCallFinished, arguments: dict[str, str]) -> str:
    shown = _short(arguments.get(event.call_id, ""), _ARGUMENTS)
    decided = f"{event.decision} · " if event.decision else ""
    if event.approved_by:
        decided += f"approved by {event.approved_by} · "
    line = (
        f"[{event.iteration}]   {event.tool} {shown}  → {decided}{event.status} · "
        f"{_duration(event.duration_s)}"
    )
    if event.status != "ok" and event.error:
        line += f"\n        {_short(event.error, _TEXT)}"
    return line


def _pending(event: ApprovalPending, _arguments: dict[str, str]) -> str:
    return (
        f"    approval needed for {event.tool} ({event.reason}); decide with:\n"
        f"      stockade approvals approve {event.request_id}   |   "
        f"stockade approvals deny {event.request_id} --note '…'"
    )


def _summarised(event: ContextSummarised, _arguments: dict[str, str]) -> str:
    return (
        f"[{event.iteration}] context: {event.summarised_messages} older messages "
        f"summarised (~{event.tokens_before:,} → ~{event.tokens_after:,} tokens)"
    )


def _reflected(event: Reflected, _arguments: dict[str, str]) -> str:
    verdict = {True: "complete", False: "not complete", None: "no verdict"}[event.complete]
    return f"[{event.iteration}] reflection: {verdict} — {_short(event.reason, _TEXT)}"


def _intervened(event: Intervened, _arguments: dict[str, str]) -> str:
    action = "run stopped" if event.final else "the model is warned"
    return f"[{event.iteration}] loop detection ({event.pattern}): {event.detail}; {action}"


def _stored(event: MemoryStored, _arguments: dict[str, str]) -> str:
    return f"    memory: {event.kind} remembered: {_short(event.content, 110)}"


def _notice(event: Notice, _arguments: dict[str, str]) -> str:
    return f"    note: {event.message}"


def _ended(event: RunFinished, _arguments: dict[str, str]) -> str:
    return f"run {event.status.value} after {_duration(event.duration_s)}"


_LINES: dict[type[Any], Callable[[Any, dict[str, str]], str | None]] = {
    RunStarted: _started,
    StateChanged: _state,
    MemoryRecalled: _recalled,
    ModelTurn: _turn,
    ToolCallFinished: _finished_call,
    ApprovalPending: _pending,
    ContextSummarised: _summarised,
    Reflected: _reflected,
    Intervened: _intervened,
    MemoryStored: _stored,
    Notice: _notice,
    RunFinished: _ended,
}


def describe_event(event: AgentEvent, arguments: dict[str, str] | None = None) -> str | None:
    """One progress line for ``event`` (``None``: nothing worth a line).

    ``arguments`` maps call ids to their arguments (from the model's turns),
    so a finished call is shown with what it was asked to do.
    """
    line = _LINES.get(type(event))
    return line(event, arguments or {}) if line is not None else None


class ProgressView:
    """Prints a run's progress lines as its events arrive."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._echo = echo or (lambda line: click.echo(line, err=True))
        self._arguments: dict[str, str] = {}
        # Running calls' last output lines, redrawn in place: on a terminal only.
        self._tail = LiveTail() if echo is None and sys.stderr.isatty() else None

    def __call__(self, event: AgentEvent) -> None:
        """Show ``event`` (the agent's ``on_event``)."""
        if isinstance(event, ToolOutput):
            if self._tail is not None:
                self._tail.add(event)
            return
        if self._tail is not None:
            self._tail.clear()
        if isinstance(event, ModelTurn):
            for call in event.tool_calls:
                self._arguments[call.id] = call.arguments
        line = describe_event(event, self._arguments)
        if line is not None:  # what the model and the tools wrote: never a terminal's command
            self._echo(for_display(line))

    def replay(self, events: Iterable[AgentEvent]) -> None:
        """Show a recorded run's events."""
        for event in events:
            self(event)


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    return f"{total}" + (f" ({detail})" if detail else "")


def _plural(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def summary_rows(result: RunResult) -> list[tuple[str, str]]:
    """The summary table's rows."""
    usage = result.usage
    rows = [
        ("run", result.run_id),
        ("status", result.status.value),
        ("goal", _short(result.goal, 100)),
        ("iterations", str(result.iterations)),
        ("tool calls", _counts(result.tool_calls)),
        (
            "tokens",
            f"{usage.total_tokens:,} (prompt {usage.prompt_tokens:,}, completion "
            f"{usage.completion_tokens:,}{', estimated' if usage.estimated else ''})",
        ),
        (
            "model calls",
            f"{result.model_calls} ({_plural(result.reflections, 'reflection', 'reflections')}, "
            f"{_plural(result.summaries, 'summary', 'summaries')})",
        ),
        ("duration", _duration(result.duration_s)),
        ("started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.started_at))),
    ]
    if result.reason:
        rows.insert(2, ("reason", result.reason))
    if result.memory_ids:
        rows.append(("memories used", ", ".join(str(i) for i in result.memory_ids)))
    if result.interventions:
        rows.append(("interventions", str(result.interventions)))
    if result.workspace:
        rows.append(("workspace", result.workspace))
    rows.append(("log", result.log_path))
    return rows


def show_result(result: RunResult, *, as_json: bool) -> None:
    """The answer and the summary table (or the whole result as JSON) on standard output."""
    if as_json:
        echo_json(result.model_dump(mode="json"))
        return
    if result.answer:
        echo_untrusted(f"answer:\n{result.answer.strip()}\n")
    table(["RUN", "SUMMARY"], summary_rows(result))

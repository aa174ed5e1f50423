"""Keeping the conversation within its budget: what to summarise, never what to split.

The conversation is ``[system prompt, goal, …turns]``. A turn starts with an
assistant message and holds the tool messages answering it (and any message
Stockade added after them: an intervention, a reflection's verdict). Before
the conversation (with the tool schemas) reaches its budget, the oldest turns
are summarised by the model and replaced by one message; the system prompt,
the goal and the latest turns stay as they were. Whole turns only: an
assistant message is never separated from its tool results (a server refuses
a tool message without the call it answers, and a call without its answer).

Token counts are estimates (about four characters a token, the rule the model
client uses for servers that report no usage), counted on what grows: the
contents and tool calls, not the JSON around them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.agent._images import IMAGE_TOKENS

__all__ = [
    "HEAD",
    "SUMMARY_MARK",
    "SUMMARY_PROMPT",
    "Compaction",
    "message_tokens",
    "plan_compaction",
    "summary_message",
    "transcript",
]

HEAD = 2
"""Messages never summarised at the start: the system prompt and the goal."""

SUMMARY_MARK = "[Summary of the earlier part of this run]"
"""How the message replacing summarised turns begins."""

SUMMARY_PROMPT = (
    "You summarise the earlier part of an agent's work so it can continue without it. "
    "Keep every fact it will need: files written and their paths, results obtained, "
    "commands that failed and why, decisions taken, what is still to do. Be brief and "
    "concrete; write plain text, no preamble."
)
"""The system prompt of a summary request."""

_PER_MESSAGE_CHARS = 2_000
_MESSAGE_OVERHEAD_TOKENS = 4


def _text_of(content: Any) -> tuple[str, int]:
    """A content's text, and how many images it holds (content is a string or a list of parts)."""
    if not isinstance(content, list):
        return content or "", 0
    texts = [str(part.get("text", "")) for part in content if part.get("type") == "text"]
    return "\n".join(texts), sum(1 for part in content if part.get("type") == "image_url")


def message_tokens(message: Mapping[str, Any]) -> int:
    """Estimated tokens of one message (its content, its tool calls, a little overhead)."""
    text, images = _text_of(message.get("content"))
    size = len(text)
    calls = message.get("tool_calls")
    if calls:
        size += len(json.dumps(calls))
    return (size + 3) // 4 + _MESSAGE_OVERHEAD_TOKENS + images * IMAGE_TOKENS


@dataclass(frozen=True, kw_only=True)
class Compaction:
    """Which messages to summarise: ``messages[HEAD:end]``; the rest stay."""

    end: int
    """One past the last message summarised (the first kept turn starts here)."""
    tokens_before: int
    """Estimated tokens of the whole conversation before."""


def _turn_starts(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices (past the head) where a turn begins: each assistant message."""
    return [
        index for index in range(HEAD, len(messages)) if messages[index].get("role") == "assistant"
    ]


def plan_compaction(
    messages: Sequence[Mapping[str, Any]],
    *,
    budget_tokens: int,
    summarise_at: float,
    keep_recent_turns: int,
    fixed_tokens: int = 0,
    tokens: Sequence[int] | None = None,
) -> Compaction | None:
    """What to summarise before the next model call, or ``None`` when nothing need be.

    ``fixed_tokens`` is what every request carries besides the messages (the
    tool schemas); ``tokens`` are the messages' estimates when the caller
    keeps them. Nothing is summarised while the estimate stays under
    ``summarise_at * budget_tokens``; else every turn but the latest
    ``keep_recent_turns`` (at least one turn is always kept, and at least one
    is summarised, or there is nothing to do).
    """
    counts = list(tokens) if tokens is not None else [message_tokens(m) for m in messages]
    total = fixed_tokens + sum(counts)
    if total < budget_tokens * summarise_at:
        return None
    starts = _turn_starts(messages)
    # Turns that can go: all but the latest kept ones; one turn always stays,
    # so the model still sees its last step and the answers to it.
    keep = max(1, keep_recent_turns)
    if len(starts) <= keep:
        keep = 1
    if len(starts) <= keep:
        return None
    end = starts[-keep]
    if end <= HEAD:
        return None
    return Compaction(end=end, tokens_before=total)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """The messages as plain text for a summary request (each cut to a fair length)."""
    lines = []
    for message in messages:
        role = message.get("role", "?")
        content, images = _text_of(message.get("content"))
        if images:
            content += f" [{images} image(s), not shown]"
        if role == "tool":
            lines.append(f"[tool result {message.get('tool_call_id', '')}] " + content)
            continue
        text = f"[{role}] {content}".rstrip()
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            text += f"\n  called {function.get('name')}({function.get('arguments', '')})"
        lines.append(text)
    return "\n".join(_clip(line, _PER_MESSAGE_CHARS) for line in lines)


def summary_message(summary: str) -> dict[str, Any]:
    """The message that replaces the summarised turns."""
    return {"role": "user", "content": f"{SUMMARY_MARK}\n{summary.strip()}"}

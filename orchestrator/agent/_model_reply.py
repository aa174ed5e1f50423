"""What a model turn produced: text, tool calls and token usage, as serialisable values.

Every reply is parsed as hostile: an OpenAI-compatible server may leave out
any field OpenAI sends, number tool calls ``call_0``, ``call_1``… in every
response, send no id at all, or send arguments as an object instead of a JSON
string. Nothing here judges the tool calls themselves: malformed arguments
and unknown tool names pass through as the model wrote them, for the
gateway's registry to refuse with a message the model can read.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import Field

from orchestrator.strict import StrictModel

__all__ = [
    "ModelReply",
    "ModelToolCall",
    "TokenUsage",
    "UsageMeter",
    "estimate_tokens",
    "new_call_id",
    "new_model_call_id",
    "tool_message",
]


class TokenUsage(StrictModel):
    """Tokens one model call (or a sum of calls) used."""

    prompt_tokens: int = Field(default=0, ge=0)
    """Tokens the model read."""
    completion_tokens: int = Field(default=0, ge=0)
    """Tokens the model wrote."""
    total_tokens: int = Field(default=0, ge=0)
    """Both together (as the server counted them, when it did)."""
    estimated: bool = False
    """True when the server reported no usage and it was estimated (about 4 characters a token),
    so budgets hold against servers that count nothing."""

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            estimated=self.estimated or other.estimated,
        )


class ModelToolCall(StrictModel):
    """One tool call a model asked for, with two ids.

    ``id`` is unique (the gateway, the approvals and the audit log use it);
    ``model_id`` is the id the model knows the call by, which the assistant
    message and its tool message carry back in the history. Servers that
    number calls per response repeat their ids across turns: only ``id``
    tells those calls apart.
    """

    id: str
    """Unique id of the call, for everything on Stockade's side."""
    model_id: str
    """The model's id for the call (replaced only when missing or repeated within the reply)."""
    name: str
    """The tool the model named, as written (it may name no tool there is)."""
    arguments: str
    """The arguments as the model wrote them: a JSON object in a string, or not."""


class ModelReply(StrictModel):
    """One model turn."""

    content: str | None
    """The text the model wrote, if any."""
    tool_calls: tuple[ModelToolCall, ...] = ()
    """The tools the model asked to call, in its order."""
    finish_reason: str | None = None
    """Why the model stopped (``stop``, ``tool_calls``, ``length``…), if the server said."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens this turn used."""
    model: str | None = None
    """The model the server says answered."""
    attempts: int = Field(default=1, ge=1)
    """Attempts the request took (more than one after retried failures)."""
    duration_s: float = Field(default=0.0, ge=0)
    """Time from the first attempt to the reply, waits between attempts included."""

    def to_message(self) -> dict[str, Any]:
        """The assistant message that records this turn in the conversation history."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.model_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


def tool_message(call: ModelToolCall, content: str) -> dict[str, Any]:
    """The tool message answering ``call`` in the history (under the model's id for it)."""
    return {"role": "tool", "tool_call_id": call.model_id, "content": content}


class UsageMeter:
    """Token usage of one run, added up call by call."""

    def __init__(self, total: TokenUsage | None = None, calls: int = 0) -> None:
        self.total = total or TokenUsage()
        """Usage of every call so far."""
        self.calls = calls
        """Model calls so far."""

    def add(self, usage: TokenUsage) -> TokenUsage:
        """Count one more call; returns the new total."""
        self.total = self.total + usage
        self.calls += 1
        return self.total


def new_call_id() -> str:
    """A fresh unique tool-call id for Stockade's side."""
    return f"call-{uuid.uuid4().hex}"


def new_model_call_id() -> str:
    """A fresh id for a call whose model gave it none (or a repeated one).

    Nine alphanumerics: Mistral's chat template (served by vLLM) refuses any
    other shape of tool-call id in the history.
    """
    return uuid.uuid4().hex[:9]


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token), for servers that report none."""
    return (len(text) + 3) // 4


def as_text(value: Any) -> str | None:
    """Message content as text: a string, or the text parts of a list of parts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [part.get("text") for part in value if isinstance(part, Mapping)]
        return "".join(part for part in parts if isinstance(part, str))
    return json.dumps(value)


def as_arguments(value: Any) -> str:
    """Tool-call arguments as a string, the way OpenAI sends them.

    Some servers send a decoded object; it is encoded back. A string is kept
    byte for byte, malformed JSON included.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def as_name(value: Any) -> str:
    """A tool name as written, or ``""`` when there is none."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def parse_usage(value: Any) -> TokenUsage | None:
    """The usage the server reported, or ``None`` when it reported none usable."""
    if not isinstance(value, Mapping):
        return None
    counts = {key: value.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if not any(_count(count) is not None for count in counts.values()):
        return None
    prompt = _count(counts["prompt_tokens"]) or 0
    completion = _count(counts["completion_tokens"]) or 0
    total = _count(counts["total_tokens"])
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total if total is not None else prompt + completion,
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # Python's JSON reader takes NaN and Infinity, which no int can be.
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        return None
    return int(value)


def estimated_usage(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    content: str | None,
    calls: Sequence[tuple[str, str]],
) -> TokenUsage:
    """Usage estimated from what was sent and received."""
    prompt = estimate_tokens(json.dumps([messages, tools or []], default=str))
    written = (content or "") + "".join(name + arguments for name, arguments in calls)
    completion = estimate_tokens(written)
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        estimated=True,
    )


def build_tool_calls(
    raw: Sequence[tuple[Any, str, str]],
    *,
    new_id: Callable[[], str] = new_call_id,
    new_model_id: Callable[[], str] = new_model_call_id,
) -> tuple[ModelToolCall, ...]:
    """Tool calls from (model's id, name, arguments), with ids made usable.

    The model's id is kept unless it is missing or repeats one earlier in the
    same reply (then the tool messages could not say which call they answer).
    """
    seen: set[str] = set()
    calls = []
    for model_id, name, arguments in raw:
        usable = (
            model_id if isinstance(model_id, str) and model_id and model_id not in seen else None
        )
        history_id = usable or new_model_id()
        seen.add(history_id)
        calls.append(
            ModelToolCall(id=new_id(), model_id=history_id, name=name, arguments=arguments)
        )
    return tuple(calls)

"""Requests as the scripted server received them, and the checks OpenAI makes of them.

Every request is recorded (:class:`RecordedRequest`); a chat request is also
offered as a :class:`ChatRequest` with the parts a test asserts on. With
validation on (the default) the server refuses, with a 400 in OpenAI's words,
what OpenAI refuses and a client is likely to get wrong: a tool call left
unanswered or answered twice, a tool message answering no call, a function
name outside ``[a-zA-Z0-9_-]{1,64}``, JSON mode with no "json" in the messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChatRequest", "RecordedRequest", "request_problem"]

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, kw_only=True)
class RecordedRequest:
    """One HTTP request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: Any
    """The decoded JSON body, or ``None`` when it was not JSON."""
    raw: bytes
    """The body as received."""
    received_at: float
    """When it arrived (``time.monotonic()``), to measure waits between attempts."""


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat-completions request, with the parts a test asserts on."""

    index: int
    """Position among the chat requests the server received (from 0)."""
    body: Mapping[str, Any]
    """The whole decoded body."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    received_at: float
    """When it arrived (``time.monotonic()``)."""

    @property
    def model(self) -> str | None:
        """The model asked for."""
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation sent."""
        messages = self.body.get("messages")
        return list(messages) if isinstance(messages, list) else []

    @property
    def last_message(self) -> dict[str, Any] | None:
        """The newest message of the conversation."""
        return self.messages[-1] if self.messages else None

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tool schemas sent."""
        tools = self.body.get("tools")
        return list(tools) if isinstance(tools, list) else []

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools sent."""
        return [
            str(tool.get("function", {}).get("name"))
            for tool in self.tools
            if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping)
        ]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The tool messages of the conversation."""
        return [message for message in self.messages if message.get("role") == "tool"]

    @property
    def stream(self) -> bool:
        """Whether the reply is asked for as server-sent events."""
        return self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streamed reply should end with a usage chunk."""
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and options.get("include_usage") is True

    @property
    def json_mode(self) -> bool:
        """Whether a JSON object (or schema) is asked for."""
        response_format = self.body.get("response_format")
        return isinstance(response_format, Mapping) and response_format.get("type") in (
            "json_object",
            "json_schema",
        )


def request_problem(body: Any) -> str | None:
    """Why OpenAI would refuse this chat request, or ``None``."""
    if not isinstance(body, Mapping):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            return f"Invalid value for 'messages[{position}].role'"
    return _tools_problem(body.get("tools")) or _pairing_problem(messages) or _json_problem(body)


def _tools_problem(tools: Any) -> str | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "Invalid type for 'tools': expected an array"
    for position, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            return (
                f"Invalid 'tools[{position}].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
            )
    return None


def _pairing_problem(messages: Sequence[Mapping[str, Any]]) -> str | None:
    awaiting: list[Any] = []
    answered: set[str] = set()
    for position, message in enumerate(messages):
        if message.get("role") == "tool":
            problem = _answer_problem(position, message.get("tool_call_id"), awaiting, answered)
            if problem is not None:
                return problem
            continue
        if awaiting:
            return _unanswered(awaiting)
        answered = set()
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if isinstance(calls, list):
            awaiting = [call.get("id") for call in calls if isinstance(call, Mapping)]
            if not all(isinstance(call_id, str) for call_id in awaiting):
                return f"messages[{position}]: every tool call needs a string id"
            if len(set(awaiting)) != len(awaiting):
                return f"messages[{position}]: tool call ids repeat within one message"
    # The calls of the last assistant message must be answered too.
    return _unanswered(awaiting) if awaiting else None


def _answer_problem(
    position: int, call_id: Any, awaiting: list[Any], answered: set[str]
) -> str | None:
    """Why a tool message is refused, or ``None`` (then it is counted as an answer)."""
    if not isinstance(call_id, str):
        return f"Invalid type for 'messages[{position}].tool_call_id': expected a string"
    if call_id in answered:
        return f"messages[{position}]: tool_call_id {call_id!r} is answered twice"
    if call_id not in awaiting:
        return (
            f"Invalid parameter: messages[{position}] with role 'tool' must be a "
            "response to a preceeding message with 'tool_calls'."
        )
    awaiting.remove(call_id)
    answered.add(call_id)
    return None


def _unanswered(awaiting: Sequence[Any]) -> str:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages "
        "responding to each 'tool_call_id'. The following tool_call_ids did not have "
        f"response messages: {', '.join(str(call_id) for call_id in awaiting)}"
    )


def _json_problem(body: Mapping[str, Any]) -> str | None:
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_object":
        return None
    if "json" in json.dumps(body.get("messages")).lower():
        return None
    return (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of "
        "type 'json_object'."
    )

"""What the scripted model answers: replies, failures and raw responses, and shorthands for them.

A script is a list of steps, one per chat request, in order. A step is a
:class:`Reply` (text, tool calls, JSON), a :class:`Failure` (an HTTP error,
429 with ``Retry-After`` included), a :class:`RawResponse` (any bytes, for
testing a client against a broken server) or a function that sees the
:class:`~orchestrator.testing.model_server.ChatRequest` and returns one of
those (it may be async).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from orchestrator.testing.model_server._requests import ChatRequest

__all__ = [
    "Answer",
    "Failure",
    "RawResponse",
    "Reply",
    "ScriptedToolCall",
    "Step",
    "Usage",
    "json_reply",
    "rate_limited",
    "server_error",
    "slow",
    "text",
    "tool_call",
    "tool_calls",
]


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token counts a reply reports instead of the server's own estimate."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, kw_only=True)
class ScriptedToolCall:
    """One tool call in a scripted reply.

    ``arguments`` as a mapping is sent JSON-encoded; as a string it is sent
    verbatim, so a test can send malformed JSON. ``id`` overrides the id the
    server would give (see the server's ``tool_call_ids``).
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def encoded_arguments(self) -> str:
        """The arguments as they go on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful model turn.

    ``finish_reason`` defaults to ``tool_calls`` when there are tool calls,
    else ``stop``. ``usage`` replaces the server's estimate (about four
    characters a token). ``delay_s`` holds the reply back that long (a slow
    model, or a request the client should time out).
    """

    content: str | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    delay_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An HTTP error in the OpenAI error format.

    ``retry_after_s`` sets the ``Retry-After`` header (whole seconds are
    written as an integer, as the standard has them); ``delay_s`` holds the
    error back that long.
    """

    status: int = 500
    message: str = "scripted failure"
    error_type: str = "server_error"
    retry_after_s: float | None = None
    delay_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class RawResponse:
    """Any response at all: a body that is not JSON, a reply with fields missing."""

    status: int = 200
    body: bytes | str | Mapping[str, Any] | list[Any] = b""
    """Bytes and strings are sent as they are; anything else JSON-encoded."""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Answer: TypeAlias = Reply | Failure | RawResponse
"""What the server answers one request with."""

Step: TypeAlias = Answer | Callable[["ChatRequest"], Answer | Awaitable[Answer]]
"""One entry of a script: an answer, or a function of the request that gives one."""


def text(content: str, **options: Any) -> Reply:
    """A reply with text only (``options`` as for :class:`Reply`)."""
    return Reply(content=content, **options)


def json_reply(value: Any, **options: Any) -> Reply:
    """A reply whose text is ``value`` as JSON (what a model in JSON mode writes)."""
    return Reply(content=json.dumps(value), **options)


def tool_call(
    name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None
) -> ScriptedToolCall:
    """One tool call; a string ``arguments`` is sent verbatim (malformed JSON too)."""
    return ScriptedToolCall(name=name, arguments={} if arguments is None else arguments, id=id)


def tool_calls(*calls: ScriptedToolCall, content: str | None = None, **options: Any) -> Reply:
    """A reply asking for one or several tool calls (``options`` as for :class:`Reply`)."""
    return Reply(content=content, tool_calls=calls, **options)


def rate_limited(retry_after_s: float | None = 1.0, message: str = "rate limit reached") -> Failure:
    """A 429, with ``Retry-After`` unless ``retry_after_s`` is ``None``."""
    return Failure(
        status=429, message=message, error_type="rate_limit_error", retry_after_s=retry_after_s
    )


def server_error(status: int = 500, message: str = "the model server failed") -> Failure:
    """A server-side failure (500 by default)."""
    return Failure(status=status, message=message)


def slow(answer: Answer, delay_s: float) -> Answer:
    """``answer``, held back ``delay_s`` seconds."""
    return replace(answer, delay_s=delay_s)

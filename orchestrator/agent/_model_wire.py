"""Reading the chat-completions and embeddings wire format, from the server's raw JSON.

The ``openai`` SDK's models are built without validation, so a field of the
wrong type passes straight through them; the raw body is read here instead,
field by field, expecting nothing beyond ``choices[0].message`` (chat) and
``data[].embedding`` (embeddings). Anything less is a :class:`ModelError`
with code ``model_protocol``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.agent._model_errors import ModelError
from orchestrator.agent._model_reply import (
    TokenUsage,
    as_arguments,
    as_name,
    as_text,
    parse_usage,
)
from orchestrator.display import well_formed
from orchestrator.errors import ErrorCode

__all__ = [
    "ParsedEmbeddings",
    "ParsedTurn",
    "parse_completion",
    "parse_embeddings",
    "protocol_error",
]


@dataclass(frozen=True, kw_only=True)
class ParsedTurn:
    """One turn as read off the wire, before ids are made usable."""

    content: str | None
    calls: tuple[tuple[Any, str, str], ...]
    """(the model's id, name, arguments) per tool call."""
    finish_reason: str | None
    usage: TokenUsage | None
    model: str | None

    def well_formed(self) -> ParsedTurn:
        """The turn with every string in it well formed (:func:`well_formed`)."""

        def clean(value: Any) -> Any:
            return well_formed(value) if isinstance(value, str) else value

        return ParsedTurn(
            content=clean(self.content),
            calls=tuple(
                (clean(model_id), well_formed(name), well_formed(arguments))
                for model_id, name, arguments in self.calls
            ),
            finish_reason=clean(self.finish_reason),
            usage=self.usage,
            model=clean(self.model),
        )


@dataclass(frozen=True, kw_only=True)
class ParsedEmbeddings:
    """Vectors in input order."""

    vectors: NDArray[np.float32]
    usage: TokenUsage | None
    model: str | None


def protocol_error(message: str, *, op: str) -> ModelError:
    """The error for a reply that is not in the wire format."""
    return ModelError(
        f"the model server's reply is not in the expected format: {message}",
        code=ErrorCode.MODEL_PROTOCOL,
        op=op,
        retryable=False,
    )


def _json_object(raw: bytes, *, op: str) -> Mapping[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise protocol_error(f"not JSON: {raw[:200]!r}", op=op) from None
    if not isinstance(body, Mapping):
        raise protocol_error(f"not a JSON object: {raw[:200]!r}", op=op)
    return body


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_completion(raw: bytes, *, op: str) -> ParsedTurn:
    """The first choice of a chat completion's JSON body."""
    body = _json_object(raw, op=op)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise protocol_error("no choices", op=op)
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise protocol_error("the choice has no message", op=op)
    return ParsedTurn(
        content=as_text(message.get("content")),
        calls=_tool_calls(message),
        finish_reason=_string(choices[0].get("finish_reason")),
        usage=parse_usage(body.get("usage")),
        model=_string(body.get("model")),
    )


def _tool_calls(message: Mapping[str, Any]) -> tuple[tuple[Any, str, str], ...]:
    raw_calls = message.get("tool_calls")
    if not isinstance(raw_calls, list) or not raw_calls:
        # The deprecated single ``function_call``, which older servers still send.
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping):
            return ((None, as_name(legacy.get("name")), as_arguments(legacy.get("arguments"))),)
        return ()
    calls = []
    for entry in raw_calls:
        if not isinstance(entry, Mapping):
            # Not a call at all: passed on nameless, so the model is told so
            # instead of its request vanishing.
            calls.append((None, "", as_arguments(entry)))
            continue
        function = entry.get("function")
        function = function if isinstance(function, Mapping) else {}
        calls.append(
            (
                entry.get("id"),
                as_name(function.get("name")),
                as_arguments(function.get("arguments")),
            )
        )
    return tuple(calls)


def parse_embeddings(raw: bytes, *, count: int, op: str) -> ParsedEmbeddings:
    """The vectors of an embeddings body, checked: one per input, one dimension."""
    body = _json_object(raw, op=op)
    data = body.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise protocol_error(f"{got} embeddings for {count} inputs", op=op)
    vectors: list[NDArray[np.float32] | None] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise protocol_error(f"embedding {position} is not an object", op=op)
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise protocol_error(f"embedding {position} has a bad index {index!r}", op=op)
        vectors[index] = _vector(item.get("embedding"), op=op, position=position)
    dimensions = {vector.shape[0] for vector in vectors if vector is not None}
    if len(dimensions) > 1:
        raise protocol_error(f"embeddings of different sizes {sorted(dimensions)}", op=op)
    matrix = (
        np.stack([vector for vector in vectors if vector is not None])
        if count
        else np.zeros((0, 0), dtype=np.float32)
    )
    return ParsedEmbeddings(
        vectors=matrix, usage=parse_usage(body.get("usage")), model=_string(body.get("model"))
    )


def _vector(value: Any, *, op: str, position: int) -> NDArray[np.float32]:
    try:
        if isinstance(value, str):
            # base64 of little-endian float32s, when a server ignores encoding_format.
            vector = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
        elif isinstance(value, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        ):
            vector = np.asarray(value, dtype=np.float64)
        else:
            raise ValueError("not a list of numbers")
    except ValueError as exc:
        raise protocol_error(f"embedding {position}: {exc}", op=op) from None
    if vector.size == 0 or not np.all(np.isfinite(vector)):
        raise protocol_error(f"embedding {position} is empty or not finite", op=op)
    return vector.astype(np.float32)

"""The OpenAI wire format the scripted server writes: completions, chunks, errors, embeddings.

Bodies follow OpenAI's chat-completions and embeddings responses field for
field. Token counts are estimates (about four characters a token) unless a
reply names its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.testing.model_server._requests import ChatRequest
from orchestrator.testing.model_server._script import Reply

__all__ = [
    "ToolCallIds",
    "WireToolCall",
    "completion_body",
    "completion_chunks",
    "embedding_inputs",
    "embeddings_body",
    "error_body",
    "hashed_embedding",
    "retry_after_header",
    "usage_body",
    "wire_tool_calls",
]

ToolCallIds = Literal["unique", "per_response"]
"""How the server numbers tool calls: ``unique`` (OpenAI's random ids) or
``per_response`` (``call_0``, ``call_1``… again in every response, as vLLM and
llama.cpp do)."""

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, kw_only=True)
class WireToolCall:
    """A tool call as it goes on the wire."""

    id: str
    name: str
    arguments: str


def wire_tool_calls(reply: Reply, ids: ToolCallIds) -> list[WireToolCall]:
    """The reply's tool calls with their ids."""
    return [
        WireToolCall(
            id=call.id or (f"call_{index}" if ids == "per_response" else _unique_id()),
            name=call.name,
            arguments=call.encoded_arguments(),
        )
        for index, call in enumerate(reply.tool_calls)
    ]


def _unique_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4


def usage_body(request: ChatRequest, reply: Reply, calls: Sequence[WireToolCall]) -> dict[str, int]:
    """The ``usage`` object of a reply."""
    if reply.usage is not None:
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    else:
        prompt = _tokens(json.dumps([request.messages, request.tools]))
        written = (reply.content or "") + "".join(call.name + call.arguments for call in calls)
        completion = _tokens(written)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def completion_body(
    request: ChatRequest,
    reply: Reply,
    calls: Sequence[WireToolCall],
    *,
    model: str,
    include_usage: bool,
) -> dict[str, Any]:
    """A whole ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish_reason(reply)},
        ],
    }
    if include_usage:
        body["usage"] = usage_body(request, reply, calls)
    return body


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def completion_chunks(
    request: ChatRequest,
    reply: Reply,
    calls: Sequence[WireToolCall],
    *,
    model: str,
    include_usage: bool,
    piece_chars: int,
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply, the way OpenAI sends them.

    Text comes in pieces; each tool call starts with its index, id and name
    and continues with its arguments in pieces. The usage chunk (no choices)
    comes last, when the request asked for it.
    """
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.content or "", piece_chars):
        yield chunk({"content": piece})
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        for piece in _pieces(call.arguments, piece_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if include_usage:
        yield {**base, "choices": [], "usage": usage_body(request, reply, calls)}


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's format."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` for a wait: whole seconds as an integer, as the standard has them."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def hashed_embedding(dimensions: int = 64) -> Callable[[str], list[float]]:
    """A deterministic bag-of-words embedder: texts sharing words point the same way.

    Each lower-cased word adds one to a bucket chosen by its hash; the vector
    is normalised. Not a language model — good enough for tests of recall
    plumbing, where "same words, nearby vector" is the property needed.
    """

    def embed(text: str) -> list[float]:
        vector = [0.0] * dimensions
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "little") % dimensions] += 1.0
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector

    return embed


def embeddings_body(
    inputs: Sequence[str],
    embed: Callable[[str], Sequence[float]],
    *,
    model: str,
    encoding_format: str,
) -> dict[str, Any]:
    """A ``list`` of ``embedding`` objects, floats or base64 (little-endian float32)."""
    data = []
    for index, text in enumerate(inputs):
        vector = [float(value) for value in embed(text)]
        encoded: list[float] | str = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(_tokens(text) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embedding_inputs(body: Mapping[str, Any]) -> list[str] | None:
    """The texts of an embeddings request (token arrays are read as their text), or ``None``."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(item, int) for item in raw):
            return [json.dumps(raw)]
        if all(isinstance(item, str | list) for item in raw):
            return [item if isinstance(item, str) else json.dumps(item) for item in raw]
    return None

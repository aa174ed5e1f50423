"""The model client: chat completions and embeddings from any OpenAI-compatible server.

One :class:`ModelClient` per configured model, over ``openai.AsyncOpenAI``
with the configured ``base_url``, so OpenAI, vLLM, Ollama and llama.cpp
servers all work unchanged. What it adds to the SDK:

- retries (tenacity) on 429, 5xx, timeouts, lost connections and streams
  cut short (no ``finish_reason``), honouring ``Retry-After``, bounded in
  attempts and total time; the SDK's own retries are off so the two never
  multiply;
- replies read as hostile from the raw JSON (see ``_model_wire``), with every
  tool call given a unique id of its own next to the model's id, which
  servers numbering calls per response repeat from turn to turn;
- token usage per call (estimated when the server reports none), added up
  per run by a :class:`UsageMeter`;
- errors as :class:`ModelError` (an ``InfrastructureError``): no ``openai``
  exception leaves the client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import openai
from numpy.typing import NDArray

from orchestrator.agent._model_errors import ModelError, ModelTimeoutError, truncated_stream
from orchestrator.agent._model_reply import (
    ModelReply,
    ModelToolCall,
    TokenUsage,
    UsageMeter,
    build_tool_calls,
    estimate_tokens,
    estimated_usage,
    new_call_id,
    new_model_call_id,
    tool_message,
)
from orchestrator.agent._model_retry import RetryBounds, with_retries
from orchestrator.agent._model_stream import StreamAccumulator
from orchestrator.agent._model_wire import ParsedTurn, parse_completion, parse_embeddings
from orchestrator.config import ModelSettings
from orchestrator.config._env import api_key_from_env
from orchestrator.errors import ConfigError

__all__ = [
    "Embeddings",
    "ModelClient",
    "ModelError",
    "ModelReply",
    "ModelTimeoutError",
    "ModelToolCall",
    "TokenUsage",
    "UsageMeter",
    "tool_message",
]

Message = Mapping[str, Any]
"""One chat message in the OpenAI format (``role``, ``content``, ``tool_calls``…)."""

# Servers that need no key (Ollama, vLLM, llama.cpp) ignore it; the SDK
# insists on one.
_NO_KEY = "no-key"


@dataclass(frozen=True, kw_only=True)
class Embeddings:
    """Vectors for a list of texts, in their order."""

    vectors: NDArray[np.float32]
    """One row per text."""
    usage: TokenUsage
    """Tokens the request used (estimated when the server reported none)."""
    model: str | None
    """The model the server says answered."""
    attempts: int
    """Attempts the request took."""


class ModelClient:
    """Talks to one configured model server.

    ``api_key`` overrides the key from the environment variable the settings
    name; ``environ`` replaces the process environment (tests). ``new_call_id``
    makes Stockade's unique tool-call ids; ``sleep`` waits between attempts.
    ``http_client`` is handed to the SDK (proxies, custom transports).
    ``on_retry`` gets the error code of each failed attempt that is tried
    again (the agent counts them as ``stockade_retries_total``).
    """

    def __init__(
        self,
        settings: ModelSettings,
        *,
        api_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        new_call_id: Callable[[], str] = new_call_id,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        http_client: Any = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        if not settings.base_url:
            raise ConfigError("no model server configured", field="model.base_url")
        if not settings.name:
            raise ConfigError("no model named", field="model.name")
        self.settings = settings
        key = api_key or api_key_from_env(settings.api_key_env, environ)
        self._key_hint = None if key else f"${settings.api_key_env} is not set"
        self._sdk = openai.AsyncOpenAI(
            api_key=key or _NO_KEY,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=0,
            http_client=http_client,
        )
        self._new_call_id = new_call_id
        self._sleep = sleep
        self._on_retry = on_retry
        self._bounds = RetryBounds(
            max_attempts=settings.max_attempts,
            max_total_s=settings.retry_max_total_s,
            attempt_timeout_s=settings.timeout_s,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
        )

    @property
    def model(self) -> str:
        """The model name requests ask for."""
        assert self.settings.name is not None  # checked in __init__
        return self.settings.name

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        json_mode: bool = False,
        stream: bool | None = None,
        on_text: Callable[[str], None] | None = None,
        meter: UsageMeter | None = None,
    ) -> ModelReply:
        """One model turn: send the conversation, get text and tool calls back.

        ``tools`` are OpenAI function-tool schemas; ``json_mode`` asks for a
        JSON object (``response_format``); ``stream`` (default: the settings')
        receives the reply as server-sent events, passing each fragment of
        text to ``on_text`` (after a retried failure the text starts again);
        a stream that ends without a ``finish_reason`` was cut short and is
        retried like a lost connection, never taken for the whole answer.
        The turn's usage is added to ``meter`` when one is given.

        Raises :class:`ModelError` (``ModelTimeoutError`` for timeouts) once
        retries are spent or at once for a request the server refuses.
        """
        streaming = self.settings.stream if stream is None else stream
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.settings.temperature,
        }
        if tools:
            request["tools"] = list(tools)
            if tool_choice is not None:
                request["tool_choice"] = tool_choice
        if json_mode:
            request["response_format"] = {"type": "json_object"}
        started = time.monotonic()

        async def attempt(deadline_s: float) -> ParsedTurn:
            async with asyncio.timeout(deadline_s):
                if streaming:
                    return await self._streamed(request, deadline_s, on_text)
                return await self._whole(request, deadline_s)

        turn, attempts = await with_retries(
            attempt,
            self._bounds,
            op="model.complete",
            api_key_hint=self._key_hint,
            sleep=self._sleep,
            on_retry=self._retried,
        )
        # Whole, so a surrogate pair streamed in two chunks is joined, not replaced.
        turn = turn.well_formed()
        calls = build_tool_calls(
            turn.calls, new_id=self._new_call_id, new_model_id=new_model_call_id
        )
        usage = turn.usage or estimated_usage(
            messages, tools, turn.content, [(call.name, call.arguments) for call in calls]
        )
        reply = ModelReply(
            content=turn.content,
            tool_calls=calls,
            finish_reason=turn.finish_reason,
            usage=usage,
            model=turn.model,
            attempts=attempts,
            duration_s=time.monotonic() - started,
        )
        if meter is not None:
            meter.add(reply.usage)
        return reply

    async def _whole(self, request: dict[str, Any], deadline_s: float) -> ParsedTurn:
        raw = await self._sdk.chat.completions.with_raw_response.create(
            **request, timeout=deadline_s
        )
        return parse_completion(raw.content, op="model.complete")

    async def _streamed(
        self,
        request: dict[str, Any],
        deadline_s: float,
        on_text: Callable[[str], None] | None,
    ) -> ParsedTurn:
        # include_usage: OpenAI sends streamed usage only when asked; vLLM,
        # Ollama and llama.cpp accept the option too.
        stream = await self._sdk.chat.completions.create(
            **request,
            stream=True,
            stream_options={"include_usage": True},
            timeout=deadline_s,
        )
        accumulator = StreamAccumulator(on_text=on_text)
        async with stream:
            async for chunk in stream:
                # The SDK builds chunks without validating them: read them back
                # as the raw dictionaries they were.
                accumulator.add(chunk.to_dict(warnings=False))
        if accumulator.chunks == 0:
            raise openai.APIResponseValidationError(
                response=stream.response, body=None, message="an empty stream"
            )
        if not accumulator.finished:
            raise truncated_stream(accumulator.chunks, op="model.complete")
        return accumulator.turn()

    async def embed(self, texts: Sequence[str], *, model: str | None = None) -> Embeddings:
        """Embeddings of ``texts`` (``model`` defaults to the chat model's name), retried alike."""
        name = model or self.model
        inputs = list(texts)
        if not inputs:
            return Embeddings(
                vectors=np.zeros((0, 0), dtype=np.float32),
                usage=TokenUsage(),
                model=None,
                attempts=1,
            )

        async def attempt(deadline_s: float) -> bytes:
            async with asyncio.timeout(deadline_s):
                # float, not the SDK's default base64: not every server speaks base64.
                raw = await self._sdk.embeddings.with_raw_response.create(
                    model=name, input=inputs, encoding_format="float", timeout=deadline_s
                )
                return raw.content

        raw, attempts = await with_retries(
            attempt,
            self._bounds,
            op="model.embed",
            api_key_hint=self._key_hint,
            sleep=self._sleep,
            on_retry=self._retried,
        )
        parsed = parse_embeddings(raw, count=len(inputs), op="model.embed")
        estimate = estimate_tokens(json.dumps(inputs))
        return Embeddings(
            vectors=parsed.vectors,
            usage=parsed.usage
            or TokenUsage(prompt_tokens=estimate, total_tokens=estimate, estimated=True),
            model=parsed.model,
            attempts=attempts,
        )

    def _retried(self, error: ModelError) -> None:
        if self._on_retry is not None:
            self._on_retry(error.code.value)

    async def close(self) -> None:
        """Close the connections to the server."""
        await self._sdk.close()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

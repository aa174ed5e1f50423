"""The ASGI app (FastAPI) of the scripted model server: the OpenAI routes over a :class:`Brain`.

The app only speaks HTTP: it records each request, asks the brain what to
answer and writes that answer in the wire format, whole or as server-sent
events. What to answer, and the bookkeeping, live in the brain.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from orchestrator.testing.model_server._requests import ChatRequest, RecordedRequest
from orchestrator.testing.model_server._script import Answer, Failure, RawResponse, Reply
from orchestrator.testing.model_server._wire import (
    ToolCallIds,
    completion_body,
    completion_chunks,
    embedding_inputs,
    embeddings_body,
    error_body,
    retry_after_header,
    wire_tool_calls,
)

__all__ = ["Brain", "build_app"]

Endpoint = Literal["chat", "embeddings"]


class Brain(Protocol):
    """What the app needs from the server behind it."""

    model: str
    tool_call_ids: ToolCallIds
    usage: bool
    stream_piece_chars: int
    api_key: str | None
    embedder: Callable[[str], Sequence[float]]

    async def started(self) -> None:
        """The app is serving (called from its event loop)."""

    def record(self, request: RecordedRequest) -> ChatRequest | None:
        """Keep the request; a chat request comes back as a :class:`ChatRequest`."""

    def problem(self, body: Any) -> str | None:
        """Why the chat request is refused (validation), or ``None``."""

    async def answer(self, request: ChatRequest) -> Answer:
        """What to answer a chat request with."""

    def injected(self, endpoint: Endpoint) -> Answer | None:
        """A failure injected for this endpoint, if one is waiting."""

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the server is closing."""


def build_app(brain: Brain) -> FastAPI:
    """The app serving ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models``."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await brain.started()
        yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def recorded(request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        return RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={key.lower(): value for key, value in request.headers.items()},
            body=body,
            raw=raw,
            received_at=time.monotonic(),
        )

    def unauthorised(request: RecordedRequest) -> Response | None:
        if brain.api_key is None or request.headers.get("authorization") == (
            f"Bearer {brain.api_key}"
        ):
            return None
        return JSONResponse(
            error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            status_code=401,
        )

    @app.post("/v1/chat/completions")
    async def chat(http_request: Request) -> Response:
        request = await recorded(http_request)
        chat_request = brain.record(request)
        refused = unauthorised(request)
        if refused is not None:
            return refused
        problem = brain.problem(request.body)
        if problem is not None or chat_request is None:
            return JSONResponse(
                error_body(problem or "invalid request", "invalid_request_error"), status_code=400
            )
        answer = brain.injected("chat") or await brain.answer(chat_request)
        await brain.pause(answer.delay_s)
        if isinstance(answer, Reply):
            return _reply(brain, chat_request, answer)
        return _failure_or_raw(answer)

    @app.post("/v1/embeddings")
    async def embeddings(http_request: Request) -> Response:
        request = await recorded(http_request)
        brain.record(request)
        refused = unauthorised(request)
        if refused is not None:
            return refused
        injected = brain.injected("embeddings")
        if injected is not None:
            await brain.pause(injected.delay_s)
            if not isinstance(injected, Reply):
                return _failure_or_raw(injected)
        body = request.body if isinstance(request.body, Mapping) else {}
        inputs = embedding_inputs(body)
        if inputs is None:
            return JSONResponse(
                error_body(
                    "'input' must be a string or a non-empty array", "invalid_request_error"
                ),
                status_code=400,
            )
        model = body.get("model")
        return JSONResponse(
            embeddings_body(
                inputs,
                brain.embedder,
                model=model if isinstance(model, str) else brain.model,
                encoding_format=str(body.get("encoding_format") or "float"),
            )
        )

    @app.get("/v1/models")
    async def models(http_request: Request) -> Response:
        brain.record(await recorded(http_request))
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": brain.model, "object": "model", "owned_by": "stockade"}],
            }
        )

    return app


def _reply(brain: Brain, request: ChatRequest, reply: Reply) -> Response:
    calls = wire_tool_calls(reply, brain.tool_call_ids)
    if not request.stream:
        return JSONResponse(
            completion_body(request, reply, calls, model=brain.model, include_usage=brain.usage)
        )
    chunks = completion_chunks(
        request,
        reply,
        calls,
        model=brain.model,
        include_usage=brain.usage and request.include_usage,
        piece_chars=brain.stream_piece_chars,
    )

    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _failure_or_raw(answer: Failure | RawResponse) -> Response:
    if isinstance(answer, Failure):
        headers = {}
        if answer.retry_after_s is not None:
            headers["Retry-After"] = retry_after_header(answer.retry_after_s)
        return JSONResponse(
            error_body(answer.message, answer.error_type),
            status_code=answer.status,
            headers=headers,
        )
    body = answer.body
    if isinstance(body, str):
        content = body.encode()
    elif isinstance(body, bytes):
        content = body
    else:
        content = json.dumps(body).encode()
    return Response(
        content,
        status_code=answer.status,
        media_type=answer.content_type,
        headers=dict(answer.headers),
    )

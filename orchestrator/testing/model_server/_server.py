"""The scripted model server: a real HTTP server on 127.0.0.1, answering from a script.

It runs uvicorn in a thread of its own, on a port the system picks, so sync
and async tests use it alike and a test's client talks to it over real HTTP,
as it would to a model server. Requests are answered in order: first
failures injected with :meth:`ScriptedModelServer.inject`, then the script's
steps, then the ``handler`` (for every request after the script).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from orchestrator.testing.model_server._app import Endpoint, build_app
from orchestrator.testing.model_server._requests import (
    ChatRequest,
    RecordedRequest,
    request_problem,
)
from orchestrator.testing.model_server._script import Answer, Failure, RawResponse, Reply, Step
from orchestrator.testing.model_server._wire import ToolCallIds, hashed_embedding

__all__ = ["ScriptedModelServer"]

_ANSWERS = (Reply, Failure, RawResponse)
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


class ScriptedModelServer:
    """An OpenAI-compatible chat-completions and embeddings server driven by a script.

    Use it as a context manager (sync or async); point a client at
    :attr:`base_url`::

        from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls

        script = [tool_calls(tool_call("files__write", {"path": "a.txt"})), text("done")]
        with ScriptedModelServer(script) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test")
            ...
        assert server.chat_requests[1].tool_results[0]["content"] == "..."

    Options:

    - ``handler``: a function of the :class:`ChatRequest` that answers every
      request once the script is spent (it may be async); an exception it
      raises is answered with a 400 and raised again when the ``with`` block
      ends (so an ``assert`` inside it fails the test).
    - ``tool_call_ids``: ``unique`` (random, as OpenAI) or ``per_response``
      (``call_0``, ``call_1``… in every response, as vLLM and llama.cpp).
    - ``usage``: send ``usage`` (some servers do not).
    - ``validate``: refuse with a 400, as OpenAI does, requests with unanswered
      or doubly answered tool calls, bad function names, or JSON mode without
      "json" in the messages.
    - ``api_key``: require ``Authorization: Bearer <api_key>``.
    - ``embedder``: text → vector for ``/v1/embeddings`` (default: a
      deterministic 64-dimension bag of words, :func:`hashed_embedding`).
    - ``stream_piece_chars``: size of the text and argument pieces streamed.
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        handler: Step | None = None,
        tool_call_ids: ToolCallIds = "unique",
        usage: bool = True,
        validate: bool = True,
        model: str = "scripted-model",
        api_key: str | None = None,
        embedder: Callable[[str], Sequence[float]] | None = None,
        stream_piece_chars: int = 8,
    ) -> None:
        self.model = model
        self.tool_call_ids: ToolCallIds = tool_call_ids
        self.usage = usage
        self.validate = validate
        self.api_key = api_key
        self.embedder = embedder or hashed_embedding()
        self.stream_piece_chars = max(1, stream_piece_chars)
        self._handler = handler
        self._script: deque[Step] = deque(script)
        self._injected: dict[Endpoint, deque[Answer]] = {"chat": deque(), "embeddings": deque()}
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._chat_requests: list[ChatRequest] = []
        self._errors: list[BaseException] = []
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None

    # -- the test's side ---------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client (``http://127.0.0.1:PORT/v1``)."""
        if self._socket is None:
            raise RuntimeError("the scripted model server is not started")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[ChatRequest]:
        """Every chat-completions request received, in order (a copy)."""
        with self._lock:
            return list(self._chat_requests)

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        """Every embeddings request received, in order."""
        return [request for request in self.requests if request.path.endswith("/embeddings")]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by script functions or the handler (a copy)."""
        with self._lock:
            return list(self._errors)

    @property
    def remaining(self) -> int:
        """Script steps not yet used."""
        with self._lock:
            return len(self._script)

    def extend(self, *steps: Step) -> None:
        """Add steps to the end of the script."""
        with self._lock:
            self._script.extend(steps)

    def inject(self, *answers: Answer, endpoint: Endpoint = "chat") -> None:
        """Answer the next requests to ``endpoint`` with ``answers``, before the script goes on.

        For failures on demand: ``server.inject(rate_limited(1), server_error())``.
        """
        with self._lock:
            self._injected[endpoint].extend(answers)

    def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests have arrived (``TimeoutError`` after ``timeout_s``)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout_s):
                raise TimeoutError(
                    f"{len(self._requests)} of {count} requests arrived within {timeout_s} s"
                )
            return list(self._requests)

    # -- starting and stopping ---------------------------------------------

    def start(self) -> ScriptedModelServer:
        """Start serving; returns at once when the server is accepting requests."""
        if self._thread is not None:
            raise RuntimeError("the scripted model server is already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        # Listening before uvicorn starts: a client connecting early waits in
        # the backlog instead of being refused.
        listener.listen(128)
        self._socket = listener
        config = uvicorn.Config(
            build_app(self),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, name=f"scripted-model-server-{id(self):x}", daemon=True
        )
        self._thread.start()
        # Ready once the app's startup has run (the listening socket queues
        # any request until uvicorn accepts it); set also if serving failed.
        if not self._ready.wait(_START_TIMEOUT_S) or self._loop is None:
            self.stop()
            raise RuntimeError("the scripted model server did not start")
        return self

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._ready.set()  # wakes start() if serving never began

    def stop(self) -> None:
        """Stop serving; requests held back by a delay are let go first."""
        if self._loop is not None and self._closing is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._closing.set)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._raise_handler_error(exc)

    async def __aenter__(self) -> ScriptedModelServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
        self._raise_handler_error(exc)

    def _raise_handler_error(self, pending: BaseException | None) -> None:
        # An assertion inside a handler is the test's real failure: raise it
        # rather than the client's error that followed from it.
        errors = self.errors
        if errors and (pending is None or not isinstance(pending, AssertionError)):
            raise errors[0]

    # -- the app's side (called on the server's thread) -----------------------

    async def started(self) -> None:
        """Called by the app once it serves: remember the loop, mark the server ready."""
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        self._ready.set()

    def record(self, request: RecordedRequest) -> ChatRequest | None:
        """Keep a request; a chat request is also returned as a :class:`ChatRequest`."""
        with self._lock:
            self._requests.append(request)
            chat = None
            if request.path.endswith("/chat/completions") and isinstance(request.body, dict):
                chat = ChatRequest(
                    index=len(self._chat_requests),
                    body=request.body,
                    headers=request.headers,
                    received_at=request.received_at,
                )
                self._chat_requests.append(chat)
            self._lock.notify_all()
            return chat

    def problem(self, body: Any) -> str | None:
        """Why a chat request is refused, when validating."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        return request_problem(body) if self.validate else None

    def injected(self, endpoint: Endpoint) -> Answer | None:
        """The next injected answer for ``endpoint``, if any."""
        with self._lock:
            queue = self._injected[endpoint]
            return queue.popleft() if queue else None

    async def answer(self, request: ChatRequest) -> Answer:
        """The next script step (or the handler) applied to ``request``."""
        with self._lock:
            step = self._script.popleft() if self._script else self._handler
        if step is None:
            return Failure(
                status=400,
                message=(
                    f"scripted model server: the script is spent (request {request.index} "
                    "has no step left and there is no handler)"
                ),
                error_type="script_exhausted",
            )
        if isinstance(step, _ANSWERS):
            return step
        try:
            result = step(request)
            answer = await result if inspect.isawaitable(result) else result
            if not isinstance(answer, _ANSWERS):
                raise TypeError(f"a script step returned {answer!r}, not a Reply or Failure")
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            return Failure(
                status=400,
                message=f"scripted model server: the script's function raised {exc!r}",
                error_type="scripted_handler_error",
            )
        return answer

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the server closes."""
        if seconds <= 0 or self._closing is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

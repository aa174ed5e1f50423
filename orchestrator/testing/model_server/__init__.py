"""A scripted OpenAI-compatible model server, for testing agents without a model.

A real HTTP server on 127.0.0.1 speaking the chat-completions and embeddings
wire format (tool calls, several per turn; JSON mode; usage; streaming with
tool-call deltas), answering from a script of turns or a function that sees
each request, recording every request, and failing on demand::

    from orchestrator.testing import (
        ScriptedModelServer, rate_limited, text, tool_call, tool_calls,
    )

    script = [
        tool_calls(tool_call("files__write", {"path": "a.txt", "content": "hi"})),
        text("The file is written."),
    ]
    with ScriptedModelServer(script) as server:
        server.inject(rate_limited(retry_after_s=1))  # the first request gets a 429
        run_my_agent(base_url=server.base_url)
    assert server.chat_requests[-1].tool_results[0]["tool_call_id"]

Failures: :func:`rate_limited` (429 with ``Retry-After``), :func:`server_error`
(500), :func:`slow` (a delay before any answer), malformed arguments
(``tool_call("x", '{"broken')``), unknown tools (any name), ids repeating
across responses (``tool_call_ids="per_response"``), and :class:`RawResponse`
for anything else a broken server might send.
"""

from orchestrator.testing.model_server._requests import ChatRequest, RecordedRequest
from orchestrator.testing.model_server._script import (
    Answer,
    Failure,
    RawResponse,
    Reply,
    ScriptedToolCall,
    Step,
    Usage,
    json_reply,
    rate_limited,
    server_error,
    slow,
    text,
    tool_call,
    tool_calls,
)
from orchestrator.testing.model_server._server import ScriptedModelServer
from orchestrator.testing.model_server._wire import ToolCallIds, hashed_embedding

__all__ = [
    "Answer",
    "ChatRequest",
    "Failure",
    "RawResponse",
    "RecordedRequest",
    "Reply",
    "ScriptedModelServer",
    "ScriptedToolCall",
    "Step",
    "ToolCallIds",
    "Usage",
    "hashed_embedding",
    "json_reply",
    "rate_limited",
    "server_error",
    "slow",
    "text",
    "tool_call",
    "tool_calls",
]

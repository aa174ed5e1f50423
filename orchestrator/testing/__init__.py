"""Fakes and guards for testing against Stockade without leaving the machine.

- :class:`ScriptedModelServer`: an OpenAI-compatible model server on 127.0.0.1
  answering from a script (see :mod:`orchestrator.testing.model_server`);
- :class:`~orchestrator.testing.backend.ScriptedBackend`: a sandbox backend
  answering from a script;
- loopback guards for egress tests.
"""

from orchestrator.testing.egress import (
    FETCH,
    FixedResolver,
    HttpApp,
    HttpRequest,
    LoopbackOnlyConnector,
    NonLoopbackConnectionError,
    UnknownNameError,
    serve_http,
)
from orchestrator.testing.model_server import (
    ChatRequest,
    Failure,
    RawResponse,
    RecordedRequest,
    Reply,
    ScriptedModelServer,
    ScriptedToolCall,
    Usage,
    hashed_embedding,
    json_reply,
    rate_limited,
    server_error,
    slow,
    text,
    tool_call,
    tool_calls,
)

__all__ = [
    "FETCH",
    "ChatRequest",
    "Failure",
    "FixedResolver",
    "HttpApp",
    "HttpRequest",
    "LoopbackOnlyConnector",
    "NonLoopbackConnectionError",
    "RawResponse",
    "RecordedRequest",
    "Reply",
    "ScriptedModelServer",
    "ScriptedToolCall",
    "UnknownNameError",
    "Usage",
    "hashed_embedding",
    "json_reply",
    "rate_limited",
    "serve_http",
    "server_error",
    "slow",
    "text",
    "tool_call",
    "tool_calls",
]

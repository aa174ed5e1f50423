"""The OpenTelemetry GenAI conventions' metric and attribute names, as Prometheus sees them.

The conventions are still marked *development*, so their names may change:
they are our own constants, kept in this one module, and nothing else spells
them. Names are the ones an OpenTelemetry collector exports to Prometheus
(dots become underscores, the unit becomes a suffix: ``gen_ai.client.operation.duration``
in seconds is ``gen_ai_client_operation_duration_seconds``). Buckets are the ones
the conventions recommend for each instrument.
"""

from __future__ import annotations

from typing import Final

# Names below contain "token": they are metric names, not secrets.
# ruff: noqa: S105

__all__ = [
    "ATTR_ERROR_TYPE",
    "ATTR_OPERATION_NAME",
    "ATTR_PROVIDER_NAME",
    "ATTR_REQUEST_MODEL",
    "ATTR_TOKEN_TYPE",
    "ATTR_TOOL_NAME",
    "DURATION_BUCKETS",
    "EXECUTE_TOOL_DURATION",
    "INVOKE_AGENT_DURATION",
    "OPERATION_CHAT",
    "OPERATION_DURATION",
    "OPERATION_EMBEDDINGS",
    "OPERATION_EXECUTE_TOOL",
    "OPERATION_INVOKE_AGENT",
    "PROVIDER_OPENAI",
    "TOKEN_TYPE_INPUT",
    "TOKEN_TYPE_OUTPUT",
    "TOKEN_USAGE",
    "TOKEN_USAGE_BUCKETS",
]

OPERATION_DURATION: Final = "gen_ai_client_operation_duration_seconds"
"""``gen_ai.client.operation.duration``: one request to the model server (a chat turn,
an embeddings request), retries included."""
TOKEN_USAGE: Final = "gen_ai_client_token_usage"
"""``gen_ai.client.token.usage``: tokens one request used, by ``gen_ai_token_type``."""
EXECUTE_TOOL_DURATION: Final = "gen_ai_execute_tool_duration_seconds"
"""``gen_ai.execute_tool.duration``: one tool execution the model asked for."""
INVOKE_AGENT_DURATION: Final = "gen_ai_invoke_agent_duration_seconds"
"""``gen_ai.invoke_agent.duration``: one agent run, start to end."""

ATTR_OPERATION_NAME: Final = "gen_ai_operation_name"
"""``gen_ai.operation.name``: ``chat``, ``embeddings``, ``execute_tool``, ``invoke_agent``."""
ATTR_PROVIDER_NAME: Final = "gen_ai_provider_name"
"""``gen_ai.provider.name``: who serves the model (``openai`` for the OpenAI API)."""
ATTR_REQUEST_MODEL: Final = "gen_ai_request_model"
"""``gen_ai.request.model``: the model named in the request (the configured one)."""
ATTR_TOKEN_TYPE: Final = "gen_ai_token_type"
"""``gen_ai.token.type``: ``input`` or ``output``."""
ATTR_TOOL_NAME: Final = "gen_ai_tool_name"
"""``gen_ai.tool.name``: the registered tool."""
ATTR_ERROR_TYPE: Final = "error_type"
"""``error.type``: what went wrong; empty when the operation succeeded."""

OPERATION_CHAT: Final = "chat"
OPERATION_EMBEDDINGS: Final = "embeddings"
OPERATION_EXECUTE_TOOL: Final = "execute_tool"
OPERATION_INVOKE_AGENT: Final = "invoke_agent"

TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

PROVIDER_OPENAI: Final = "openai"
"""The provider name of the OpenAI API, which every server the model client talks to speaks."""

DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""The conventions' advice for ``gen_ai.client.operation.duration`` (seconds)."""

TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""The conventions' advice for ``gen_ai.client.token.usage``."""

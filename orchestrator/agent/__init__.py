"""The agent side of Stockade: the model client (and, coming, the agent loop and memory).

The model client talks to any OpenAI-compatible chat-completions server; see
:mod:`orchestrator.agent.model`.
"""

from orchestrator.agent.model import (
    Embeddings,
    ModelClient,
    ModelError,
    ModelReply,
    ModelTimeoutError,
    ModelToolCall,
    TokenUsage,
    UsageMeter,
    tool_message,
)

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

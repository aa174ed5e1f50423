"""Tools: typed functions described to models, validated host-side, run in sandboxes."""

from orchestrator.tools._models import ToolCall, ToolResult, ToolStatus
from orchestrator.tools._registry import (
    MAX_ARGUMENT_BYTES,
    ToolRegistry,
    ToolSpec,
    ValidatedCall,
    openai_name,
)

__all__ = [
    "MAX_ARGUMENT_BYTES",
    "ToolCall",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "ToolStatus",
    "ValidatedCall",
    "openai_name",
]

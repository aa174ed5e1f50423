"""Tools: typed functions described to models, validated host-side, run in sandboxes."""

from orchestrator.tools._executor import (
    SANDBOX_STATUS,
    ToolExecutor,
    infrastructure_result,
    tool_result,
)
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
    "SANDBOX_STATUS",
    "ToolCall",
    "ToolExecutor",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "ToolStatus",
    "ValidatedCall",
    "infrastructure_result",
    "openai_name",
    "tool_result",
]

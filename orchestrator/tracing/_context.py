"""The trace id of the run (or call) under way, for log lines; free of OpenTelemetry.

The JSON log formatter reads :data:`current_trace_id` on every line, so it
must not import the SDK: with tracing off the variable is never set and
reading it costs one ``ContextVar.get``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["current_trace_id"]

current_trace_id: Final[ContextVar[str | None]] = ContextVar("stockade_trace_id", default=None)
"""The 32 hex digits of the trace the code running now belongs to; None outside one."""

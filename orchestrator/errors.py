"""The exception hierarchy: one root, a config branch, an infrastructure branch.

- :class:`ConfigError` is the user's mistake; it fails fast and names the file,
  line and field.
- :class:`InfrastructureError` is the platform's trouble (engine down, image
  missing, container died). It carries a stable :class:`ErrorCode` (safe as a
  metric label), the ``op`` that failed and whether retrying can help.
- Failures of tool code are not exceptions: they become a result the model reads.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConfigError",
    "ErrorCode",
    "InfrastructureError",
    "NotFoundError",
    "SandboxTimeoutError",
    "StockadeError",
    "UsageError",
]


class StockadeError(Exception):
    """Root of every exception Stockade raises on purpose."""


class ConfigError(StockadeError, ValueError):
    """A configuration mistake: bad file, field or value. Never retried."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        where = ":".join(str(part) for part in (file, line) if part is not None)
        prefix = f"{where}: " if where else ""
        subject = f"{field}: " if field else ""
        super().__init__(f"{prefix}{subject}{message}")


class UsageError(StockadeError, ValueError):
    """A public call was given a value it cannot accept: the calling code's mistake."""


class NotFoundError(StockadeError, KeyError):
    """A public call named something that does not exist (an approval request, a run)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better plain.
        return str(self.args[0]) if self.args else ""


class ErrorCode(StrEnum):
    """Stable identifiers for infrastructure failures (used as metric labels)."""

    ENGINE_UNAVAILABLE = "engine_unavailable"
    ENGINE_ERROR = "engine_error"
    IMAGE_MISSING = "image_missing"
    IMAGE_BUILD_FAILED = "image_build_failed"
    CONTAINER_START_FAILED = "container_start_failed"
    CONTAINER_DIED = "container_died"
    RUNNER_PROTOCOL = "runner_protocol"
    TIMEOUT = "timeout"
    WORKSPACE = "workspace"
    CLOSED = "closed"
    HOST_LOST = "host_lost"
    """A sandbox host (a Ray actor, its node or its engine) went away during a call."""
    EFFECTS_UNKNOWN = "effects_unknown"
    """A call was cut short after its program may have started (a sandbox host went away,
    or the engine killed or removed its container), and it may not run again (its sandbox
    could reach the network, its tool is not idempotent): it may have done all, part or
    none of its work."""
    AUDIT = "audit"
    APPROVALS = "approvals"
    INSTALLATION = "installation"
    TOKENS = "tokens"
    """The HTTP server's token database could not be read or written."""
    RUNS = "runs"
    """The agent runs' database (``runs.db``: checkpoints and leases) could not be used."""
    MODEL_UNAVAILABLE = "model_unavailable"
    """The model server could not be reached, answered 5xx, or its streamed reply ended
    without a ``finish_reason`` (cut short)."""
    MODEL_RATE_LIMITED = "model_rate_limited"
    """The model server answered 429 (too many requests)."""
    MODEL_ERROR = "model_error"
    """The model server refused the request (a 4xx other than 429: key, model name, request)."""
    MODEL_PROTOCOL = "model_protocol"
    """The model server's reply was not in the chat-completions wire format."""


class InfrastructureError(StockadeError):
    """The platform (not the tool, not the user) failed to do its part."""

    def __init__(self, message: str, *, code: ErrorCode, op: str, retryable: bool) -> None:
        self.code = code
        self.op = op
        self.retryable = retryable
        super().__init__(f"{op}: {message} [{code.value}{', retryable' if retryable else ''}]")


class SandboxTimeoutError(InfrastructureError, TimeoutError):
    """An infrastructure step (not a tool call) exceeded its deadline."""

    def __init__(self, message: str, *, op: str, retryable: bool = True) -> None:
        super().__init__(message, code=ErrorCode.TIMEOUT, op=op, retryable=retryable)

"""What crosses the boundary between a model, the platform and a tool."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from orchestrator.artifacts import Artifact
from orchestrator.sandbox.egress import EgressConnection
from orchestrator.strict import StrictModel

__all__ = ["ToolCall", "ToolResult", "ToolStatus"]

_REJECTED_SHOWN = 20
"""Workspace entries not kept, and artifacts dropped, that a model reads one by one (the rest
are counted)."""


class ToolStatus(StrEnum):
    """How a tool call ended, as the model and the audit log see it."""

    OK = "ok"
    ERROR = "error"
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    TIMEOUT = "timeout"
    OOM_KILLED = "oom_killed"
    OUTPUT_TRUNCATED = "output_truncated"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"
    APPROVAL_DENIED = "approval_denied"
    INFRASTRUCTURE_ERROR = "infrastructure_error"
    CANCELLED = "cancelled"
    """The caller gave up on the call (the orchestrator stopped); only the audit log sees it."""


class ToolCall(StrictModel):
    """One call a model (or any caller) asks for."""

    id: str = Field(min_length=1, max_length=200)
    """The caller's id for the call (the model's ``tool_call_id``)."""
    name: str = Field(min_length=1, max_length=200)
    """Tool name, ``toolkit.function``."""
    arguments: Any
    """Arguments as the model sent them: a JSON string, or any already-decoded JSON value
    (anything but an object is refused by validation, with a message the model can read)."""
    run_id: str | None = None
    """The agent run, whose workspace the call sees (1-128 letters, digits, ``.``, ``_``, ``-``,
    starting with a letter or digit: it names directories); None: no run, no workspace."""
    principal: str | None = None
    """Who the run acts for (policy and rate limits use it)."""


class ToolResult(StrictModel):
    """The outcome of a tool call, readable by the model."""

    call_id: str
    """The id of the call this answers."""
    name: str
    """The tool that was asked for."""
    status: ToolStatus
    """How the call ended."""
    output: str = ""
    """What the tool produced (stdout, or the tool's return value as text)."""
    error: str | None = None
    """What went wrong, in words a model can act on."""
    truncated: bool = False
    """True when the output was cut at its cap."""
    exit_code: int | None = None
    """Exit code of the tool's process, when it ran."""
    duration_s: float = 0.0
    """Wall-clock time of the call."""
    files_changed: tuple[str, ...] = ()
    """Workspace paths the call added, modified or deleted."""
    files_rejected: tuple[str, ...] = ()
    """Entries the call left in the workspace that were not kept, each with why (a link,
    a FIFO, a name the host cannot hold, …): the next call will not find them."""
    image_digest: str | None = None
    """Digest of the image the tool ran in."""
    host: str | None = None
    """The sandbox host that ran the tool (``sandbox.engine: ray``), None on the local engine."""
    retry_after_s: float | None = None
    """For ``rate_limited``: when trying again can succeed."""
    egress: tuple[EgressConnection, ...] = ()
    """Connections the tool tried through the egress proxy, allowed and refused."""
    artifacts: tuple[Artifact, ...] = ()
    """Files the call added or changed under ``outputs/`` of its workspace, kept as artifacts
    (metadata only: id, name, media type, size, SHA-256; the bytes are in the run's store)."""
    artifacts_dropped: tuple[str, ...] = ()
    """``outputs/`` files not kept as artifacts, each with the cap it broke."""

    def notes(self) -> list[str]:
        """The lines a model reads after the output, whatever the entrance: one per artifact,
        per dropped file (in their place) and per workspace entry not kept (of the last two,
        the first few, then how many more)."""
        # A call may leave thousands of outputs/ files past the cap of 32, or of entries
        # the workspace cannot keep: a line each would flood the model's context.
        dropped = [f"artifact dropped: {reason}" for reason in self.artifacts_dropped]
        if len(dropped) > _REJECTED_SHOWN:
            more = len(dropped) - _REJECTED_SHOWN
            dropped = [*dropped[:_REJECTED_SHOWN], f"and {more} more artifacts dropped"]
        rejected = [f"not kept in the workspace: {entry}" for entry in self.files_rejected]
        if len(rejected) > _REJECTED_SHOWN:
            more = len(rejected) - _REJECTED_SHOWN
            rejected = [*rejected[:_REJECTED_SHOWN], f"and {more} more entries not kept"]
        return [*(artifact.stand_in() for artifact in self.artifacts), *dropped, *rejected]

    def for_model(self) -> str:
        """The text a model reads as the tool's answer (then :meth:`notes`)."""
        lines = self.notes()
        if self.status is ToolStatus.OK:
            return "\n".join([self.output, *lines] if self.output else lines)
        parts = [f"[{self.status.value}]"]
        if self.error:
            parts.append(self.error)
        if self.output:
            parts.append(f"output:\n{self.output}")
        if self.truncated:
            parts.append("(output truncated)")
        if self.retry_after_s is not None:
            parts.append(f"retry after {self.retry_after_s:.1f} s")
        return "\n".join([*parts, *lines])

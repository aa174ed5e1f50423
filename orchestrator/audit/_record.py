"""What one audit record says: the call, the decisions about it, and what it did."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Artifact
from orchestrator.policy import Effect
from orchestrator.sandbox.egress import EgressConnection
from orchestrator.strict import STRICT

__all__ = ["ApprovalInfo", "AuditEvent", "AuditRecord", "EgressConnection", "RateLimitInfo"]

# from_attributes: the gateway may hand over its own dataclasses
# (RateLimitAnswer) as they are.
_FROM_ATTRIBUTES = ConfigDict(**STRICT, from_attributes=True)


class AuditEvent(StrEnum):
    """The kind of a record."""

    CALL = "call"
    """One tool call, whatever its outcome (denied, rate-limited, failed or done)."""
    INTENT = "intent"
    """A call is about to run: written, durably, before its sandbox is acquired; one per
    attempt. The call's ``call`` record (its outcome) lists the intents' ``seq`` in
    ``intents``; an intent that no outcome names is a call whose process died (or could not
    write the outcome) after it may have run."""
    APPROVAL_REQUESTED = "approval_requested"
    """A call is waiting for a human."""
    APPROVAL_DECIDED = "approval_decided"
    """A human or rule decided, or the request expired."""
    POLICY_LOADED = "policy_loaded"
    """The orchestrator (re)loaded its policy."""
    RUN_STARTED = "run_started"
    """An agent run began."""
    RUN_FINISHED = "run_finished"
    """An agent run ended."""


class ApprovalInfo(BaseModel):
    """How an approval request ended."""

    model_config = _FROM_ATTRIBUTES

    request_id: str
    """The approval request's id."""
    status: str
    """``approved``, ``denied`` or ``expired``."""
    decided_by: str | None = None
    """Who decided (a user name, or ``auto:<rule>``)."""
    edited_arguments: dict[str, Any] | None = None
    """Arguments the approver replaced the model's with (redacted like the originals)."""
    waited_s: float | None = None
    """How long the call waited for the decision."""
    scope: str | None = None
    """What an approval covers: ``once`` (the call consumed request ``request_id``), or
    ``run`` / ``run-identical`` (a standing grant for the run, which the call used)."""


class RateLimitInfo(BaseModel):
    """The rate limiter's answer for the call."""

    model_config = _FROM_ATTRIBUTES

    allowed: bool
    """The call was within every limit."""
    retry_after_s: float = 0.0
    """Seconds the caller was told to wait."""
    limit: str | None = None
    """The limit that refused."""


class AuditRecord(BaseModel):
    """One entry of the audit log, before the log adds ``seq``, ``ts``, ``prev`` and ``hash``.

    Only ``event`` is required; absent fields are left out of the line.
    """

    model_config = STRICT

    event: AuditEvent
    """The kind of record."""
    call_id: str | None = None
    """The tool call's id."""
    run_id: str | None = None
    """The agent run."""
    principal: str | None = None
    """Who the run acts for."""
    tool: str | None = None
    """The tool's name, e.g. ``python.run``."""
    arguments: dict[str, Any] | None = None
    """The call's arguments; redacted, then each value larger than the log's
    ``max_value_bytes`` kept as its SHA-256, size and first bytes."""
    decision: Effect | None = None
    """The policy's decision."""
    rule: str | None = None
    """The policy rule that decided; absent when the default applied."""
    reason: str | None = None
    """Why (the policy's reason, or why the call failed)."""
    approval: ApprovalInfo | None = None
    """The approval, for calls that needed one."""
    rate_limit: RateLimitInfo | None = None
    """The rate limiter's answer."""
    retries: int | None = Field(default=None, ge=0)
    """Attempts after the first."""
    attempt: int | None = Field(default=None, ge=1)
    """For an intent: which attempt of the call it announces (1 for the first)."""
    intents: list[int] = Field(default_factory=list)
    """For a call's outcome: the ``seq`` of the intent record of each attempt that was about
    to run, in order (empty when the call never reached a sandbox)."""
    sandbox_profile: str | None = None
    """The sandbox profile the call ran in."""
    image_digest: str | None = None
    """The image the sandbox ran."""
    host: str | None = None
    """The sandbox host that ran the call (``sandbox.engine: ray``; the last attempt's)."""
    status: str | None = None
    """The call's outcome, e.g. ``ok``, ``error``, ``timeout``, ``denied``."""
    exit_code: int | None = None
    """The tool process's exit code."""
    duration_s: float | None = Field(default=None, ge=0)
    """Wall-clock time of the call, in seconds."""
    output_bytes: int | None = Field(default=None, ge=0)
    """Size of the output before truncation."""
    output: str | None = None
    """What the tool answered, as the caller read it; redacted, and bounded like the
    arguments (a large output is kept as its SHA-256, size and first bytes)."""
    egress: list[EgressConnection] = Field(default_factory=list)
    """Connections the sandbox tried."""
    files_changed: list[str] = Field(default_factory=list)
    """The workspace paths the call added, modified or deleted; redacted, and bounded as one
    value like the output (a long list is kept as its SHA-256, size and first bytes)."""
    files_rejected: list[str] = Field(default_factory=list)
    """What the sandbox sent back and the host refused, each with the reason (the call's
    changes were not kept when the whole workspace was refused); redacted and bounded."""
    artifacts: list[Artifact] = Field(default_factory=list)
    """The artifacts the call left under ``outputs/``: id, name, media type, size and SHA-256
    of each; never their bytes (the SHA-256 ties a served file to this record)."""
    error: str | None = None
    """Error message, for failures; redacted and bounded before it is written."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Anything else worth keeping (e.g. the policy file and its hash); redacted and bounded."""

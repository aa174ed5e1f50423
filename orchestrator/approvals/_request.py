"""An approval request, where it stands, and what its decision covers."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from orchestrator.strict import StrictModel

__all__ = ["ApprovalRequest", "ApprovalScope", "ApprovalStatus"]


class ApprovalStatus(StrEnum):
    """Where a request stands. Only ``pending`` ever changes, and only once."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class ApprovalScope(StrEnum):
    """What an approval covers: one execution, unless the approver explicitly grants more."""

    ONCE = "once"
    """The one execution that uses the decision up; an identical later call asks again."""
    RUN_IDENTICAL = "run-identical"
    """Every later call of the run with the same tool and arguments (under the same rule)."""
    RUN = "run"
    """Every later call of the run to the same tool that the same policy rule sends for approval."""


class ApprovalRequest(StrictModel):
    """A tool call waiting for (or past) a decision."""

    id: str
    """Request id."""
    tool: str
    """The tool the call asks for."""
    arguments: dict[str, Any]
    """The arguments as the model sent them (already validated)."""
    rule: str | None
    """The policy rule that asked for approval."""
    reason: str
    """Why approval is needed."""
    principal: str | None
    """Who the run acts for."""
    run_id: str | None
    """The run the call belongs to."""
    call_id: str | None = None
    """The caller's id of the call (the model's ``tool_call_id``)."""
    status: ApprovalStatus
    """Pending, approved, denied or expired (a pending request past its time reads as expired)."""
    created_at: float
    """Unix time of the request."""
    expires_at: float
    """Unix time after which the request can no longer be decided."""
    decided_by: str | None = None
    """Who decided."""
    decided_at: float | None = None
    """Unix time of the decision."""
    edited_arguments: dict[str, Any] | None = None
    """Arguments the approver replaced the original ones with."""
    note: str | None = None
    """The decider's words, e.g. why a call was denied (shown to the model)."""
    scope: ApprovalScope = ApprovalScope.ONCE
    """What an approval covers; anything but ``once`` is a standing grant the approver chose."""
    consumed_by: str | None = None
    """The id of the call that used this decision up (ran on it, or was refused by it)."""
    consumed_at: float | None = None
    """Unix time the decision was used up; a consumed request never authorises another call."""

    @property
    def effective_arguments(self) -> dict[str, Any]:
        """The arguments to run the call with: the approver's edit, if any."""
        return self.edited_arguments if self.edited_arguments is not None else self.arguments

    @property
    def is_grant(self) -> bool:
        """An approval for the rest of the run: used by many calls, consumed by none."""
        return self.status is ApprovalStatus.APPROVED and self.scope is not ApprovalScope.ONCE

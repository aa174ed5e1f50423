"""An approval request and where it stands."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ApprovalRequest", "ApprovalStatus"]


class ApprovalStatus(StrEnum):
    """Where a request stands. Only ``pending`` ever changes, and only once."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class ApprovalRequest(BaseModel):
    """A tool call waiting for (or past) a decision."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

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

    @property
    def effective_arguments(self) -> dict[str, Any]:
        """The arguments to run the call with: the approver's edit, if any."""
        return self.edited_arguments if self.edited_arguments is not None else self.arguments

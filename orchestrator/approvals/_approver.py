"""The approver interface: one async call that looks at a request and decides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.approvals._request import ApprovalRequest
from orchestrator.errors import UsageError

__all__ = ["ApprovalDecision", "Approver"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ApprovalDecision:
    """An approver's answer to one request."""

    approved: bool
    """Run the call (True) or refuse it (False)."""
    by: str
    """Who decided: a user name, or ``auto:<rule>`` for a rule."""
    note: str | None = None
    """Why; on a denial the model reads it."""
    arguments: dict[str, Any] | None = None
    """Replacement arguments for an approved call; None keeps the model's."""

    def __post_init__(self) -> None:
        if self.arguments is not None and not self.approved:
            raise UsageError("edited arguments only make sense when approving")


class Approver(Protocol):
    """Decides approval requests: a human at a terminal, a web page, a webhook or rules.

    Returns None to abstain (the request goes to the next approver, or waits
    for a human). A plain ``async def approver(request): ...`` qualifies.
    """

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """Decide ``request``, or return None to leave it to someone else."""
        ...

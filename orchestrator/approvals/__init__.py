"""Approval gates: durable requests that a human or a rule decides.

The gateway creates a request in the :class:`ApprovalStore` when the policy
says ``require_approval``, asks its :class:`Approver` chain (for example an
:class:`AutoApprover`, then a human through ``stockade approvals``), and
waits with :meth:`ApprovalStore.wait_for_decision`.
"""

from orchestrator.approvals._approver import ApprovalDecision, Approver
from orchestrator.approvals._auto import AutoApprovalRule, AutoApprover
from orchestrator.approvals._request import ApprovalRequest, ApprovalStatus
from orchestrator.approvals._store import ApprovalStore

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "ApprovalStatus",
    "ApprovalStore",
    "Approver",
    "AutoApprovalRule",
    "AutoApprover",
]

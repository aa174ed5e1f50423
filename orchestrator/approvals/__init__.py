"""Approval gates: durable requests that a human or a rule decides.

The gateway creates a request in the :class:`ApprovalStore` when the policy
says ``require_approval``, asks its :class:`Approver` chain (an
:class:`AutoApprover`, a :class:`WebhookNotifier` that tells people, a
:class:`TerminalApprover` that asks the person at the console) and waits for
a decision taken by any of them or by ``stockade approvals`` elsewhere. A
decision authorises the one execution that consumes it, unless the approver
grants it for the rest of the run (an :class:`ApprovalScope`).
"""

from orchestrator.approvals._approver import ApprovalDecision, Approver
from orchestrator.approvals._auto import AutoApprovalRule, AutoApprover
from orchestrator.approvals._config import ApproversConfig, WebhookConfig, load_approvers
from orchestrator.approvals._describe import describe_request
from orchestrator.approvals._elicit import (
    ElicitationApprover,
    ElicitationChannel,
    ElicitationConfig,
    ElicitationMode,
)
from orchestrator.approvals._request import ApprovalRequest, ApprovalScope, ApprovalStatus
from orchestrator.approvals._store import ApprovalStore
from orchestrator.approvals._terminal import TerminalApprover
from orchestrator.approvals._webhook import WebhookNotifier, webhook_payload

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "ApprovalScope",
    "ApprovalStatus",
    "ApprovalStore",
    "Approver",
    "ApproversConfig",
    "AutoApprovalRule",
    "AutoApprover",
    "ElicitationApprover",
    "ElicitationChannel",
    "ElicitationConfig",
    "ElicitationMode",
    "TerminalApprover",
    "WebhookConfig",
    "WebhookNotifier",
    "describe_request",
    "load_approvers",
    "webhook_payload",
]

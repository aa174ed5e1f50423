"""Approval gates: durable requests a human (or a rule) decides."""

from orchestrator.approvals._store import ApprovalRequest, ApprovalStatus, ApprovalStore

__all__ = ["ApprovalRequest", "ApprovalStatus", "ApprovalStore"]

"""``stockade approvals …`` (moved here from ``orchestrator._approvals_cli`` when it settles)."""

from orchestrator._approvals_cli import approvals

__all__ = ["approvals"]

"""Assembling a gateway from files: the policy, the approvers, where state is kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.approvals import ApprovalStore, Approver, ApproversConfig, load_approvers
from orchestrator.audit import AuditLog
from orchestrator.gateway._approval_gate import ApprovalGate
from orchestrator.gateway._gateway import Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import load_policy
from orchestrator.tools import ToolExecutor

__all__ = ["build_gateway"]


def build_gateway(
    executor: ToolExecutor,
    *,
    policy: Path,
    audit_log: Path,
    approvals_db: Path,
    approvers: Path | None = None,
    terminal: bool = False,
    extra_approvers: Sequence[Approver] = (),
    metrics: Metrics | None = None,
) -> Gateway:
    """A gateway over ``executor`` under the policy file ``policy``.

    The audit log redacts the policy's ``redact`` patterns, and so do the
    approvers (what a webhook or a terminal shows). ``approvers`` is an
    approvers file (auto rules, webhook); ``terminal`` adds a prompt on stdin
    after them; ``extra_approvers`` come last. Raises
    :class:`~orchestrator.errors.ConfigError` for a bad file, naming its line
    and field.
    """
    loaded = load_policy(policy)
    config = load_approvers(approvers) if approvers is not None else ApproversConfig()
    chain = [
        *config.approvers(terminal=terminal, redact_patterns=loaded.redact),
        *extra_approvers,
    ]
    return Gateway(
        executor,
        loaded,
        AuditLog(audit_log, redact_patterns=loaded.redact),
        approvals=ApprovalGate(ApprovalStore(approvals_db), chain),
        metrics=metrics,
        policy_source=str(policy),
    )

"""Where Stockade keeps its state, and where the shipped files are.

Everything an orchestrator writes (workspaces, the audit log, the approval
database) lives under ``$STOCKADE_HOME`` (default ``~/.stockade``), so two
terminals (the orchestrator and ``stockade approvals``) find the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "default_approvals_db",
    "default_audit_log",
    "default_policy",
    "shipped_policies_dir",
    "stockade_home",
]


def stockade_home() -> Path:
    """``$STOCKADE_HOME``, else ``~/.stockade``."""
    return Path(os.environ.get("STOCKADE_HOME", Path.home() / ".stockade"))


def default_audit_log() -> Path:
    """``$STOCKADE_AUDIT_LOG``, else ``audit.jsonl`` in the home."""
    configured = os.environ.get("STOCKADE_AUDIT_LOG")
    return Path(configured) if configured else stockade_home() / "audit.jsonl"


def default_approvals_db() -> Path:
    """``$STOCKADE_APPROVALS_DB``, else ``approvals.db`` in the home."""
    configured = os.environ.get("STOCKADE_APPROVALS_DB")
    return Path(configured) if configured else stockade_home() / "approvals.db"


def shipped_policies_dir() -> Path:
    """The ``policies/`` directory of the source tree (default, strict, dev)."""
    return Path(__file__).resolve().parents[1] / "policies"


def default_policy() -> Path:
    """``$STOCKADE_POLICY``, else the shipped ``policies/default.yaml``."""
    configured = os.environ.get("STOCKADE_POLICY")
    return Path(configured) if configured else shipped_policies_dir() / "default.yaml"

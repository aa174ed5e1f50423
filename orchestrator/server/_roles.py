"""Who a request acts for: roles a token carries, and what each lets its holder do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ROLE_PERMISSIONS", "Identity", "Permission", "Role", "permissions_of"]


class Role(StrEnum):
    """What a token is for. A token may carry several."""

    CALLER = "caller"
    """Calls tools (and, with the agent, starts runs): the programs that use Stockade."""
    APPROVER = "approver"
    """Sees and decides approval requests; calls nothing unless also a caller."""
    VIEWER = "viewer"
    """Reads its own principal's runs (the run timeline pages, the runs endpoints' reads);
    starts, cancels and approves nothing."""
    ADMIN = "admin"
    """Everything."""


class Permission(StrEnum):
    """One thing an endpoint needs; routers ask for these, never for roles."""

    READ_TOOLS = "tools:read"
    """List the tools and their schemas."""
    CALL_TOOLS = "tools:call"
    """Call a tool through the gateway."""
    START_RUNS = "runs:start"
    """Start, watch and cancel agent runs (for the runs endpoints)."""
    READ_RUNS = "runs:read"
    """Read runs, their events and artifacts (own principal's; an admin's: every run)."""
    READ_APPROVALS = "approvals:read"
    """List and show approval requests."""
    DECIDE_APPROVALS = "approvals:decide"
    """Approve or deny approval requests."""


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.CALLER: frozenset(
        {Permission.READ_TOOLS, Permission.CALL_TOOLS, Permission.START_RUNS, Permission.READ_RUNS}
    ),
    # An approver reads the tools to judge (and edit) the calls it decides.
    Role.APPROVER: frozenset(
        {Permission.READ_TOOLS, Permission.READ_APPROVALS, Permission.DECIDE_APPROVALS}
    ),
    Role.VIEWER: frozenset({Permission.READ_RUNS}),
    Role.ADMIN: frozenset(Permission),
}
"""The permissions of each role (total: every role has an entry; tested)."""


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """The union of the roles' permissions."""
    granted: frozenset[Permission] = frozenset()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return granted


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who a request acts for: the principal and roles of its token."""

    principal: str
    """The principal policies, rate limits, approvals and the audit log see."""
    roles: frozenset[Role]
    """The token's roles."""
    token_id: str | None
    """The token's public id; None for a request served without a token (loopback, no tokens)."""

    def can(self, permission: Permission) -> bool:
        """Whether the roles grant ``permission``."""
        return permission in permissions_of(self.roles)

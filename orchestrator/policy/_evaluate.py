"""First-match evaluation of a policy for one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.policy._model import Effect, Policy, RetrySettings

__all__ = ["Decision", "evaluate"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The policy's answer for one call."""

    decision: Effect
    """Allow, deny or require approval."""
    rule: str | None
    """The matching rule's name; None when the policy's default applied."""
    reason: str
    """Why, in words the model (on deny) or the approver can read."""
    sandbox_profile: str | None = None
    """The rule's sandbox profile; None means the tool's own."""
    timeout_s: float | None = None
    """The rule's deadline; None means the profile's."""
    retry: RetrySettings | None = None
    """The rule's retry settings; None means the gateway's defaults."""
    approval_timeout_s: float | None = None
    """How long to wait for approval; set exactly when approval is required."""

    @property
    def allowed(self) -> bool:
        """The call may run without asking anyone."""
        return self.decision is Effect.ALLOW


def evaluate(
    policy: Policy, tool_name: str, arguments: dict[str, Any], principal: str | None = None
) -> Decision:
    """The first rule that matches the call decides; otherwise the policy's default."""
    for match, rule in policy.rules_for(tool_name):
        # CallMatch.matches_call, inlined (keep the two alike): the gateway
        # benchmark's 50-rule decision measured 45.8 against 49.3 µs.
        principals = match.principals
        if principals is not None and (principal is None or principals.match(principal) is None):
            continue
        when = match.when
        if when is None or when(arguments):
            effect = rule.decision
            return Decision(
                decision=effect,
                rule=rule.name,
                reason=rule.reason or _default_reason(effect, rule.name),
                sandbox_profile=rule.sandbox_profile,
                timeout_s=rule.timeout_s,
                retry=rule.retry,
                approval_timeout_s=(
                    rule.approval_timeout_s or policy.approval_timeout_s
                    if effect is Effect.REQUIRE_APPROVAL
                    else None
                ),
            )
    return Decision(
        decision=Effect(policy.default),
        rule=None,
        reason=f"no policy rule matches {tool_name!r}; the default is {policy.default}",
    )


def _default_reason(effect: Effect, rule: str) -> str:
    if effect is Effect.DENY:
        return f"denied by policy rule {rule!r}"
    if effect is Effect.REQUIRE_APPROVAL:
        return f"policy rule {rule!r} requires approval"
    return f"allowed by policy rule {rule!r}"

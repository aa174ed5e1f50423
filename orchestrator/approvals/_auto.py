"""Approving or denying by rule, with the policy's own matcher (so RE2 for ``regex``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    model_validator,
)

from orchestrator.approvals._approver import ApprovalDecision
from orchestrator.approvals._request import ApprovalRequest
from orchestrator.policy import CallMatch, Condition, Globs
from orchestrator.policy._conditions import conditions_of
from orchestrator.strict import StrictModel

__all__ = ["AutoApprovalRule", "AutoApprover"]


class AutoApprovalRule(StrictModel):
    """Decides the requests it matches, the way a policy rule matches calls."""

    name: str = Field(min_length=1)
    """Recorded as ``auto:<name>`` in the decision and the audit log."""
    tools: Globs = Field(min_length=1)
    """Tool-name globs."""
    principals: Globs | None = None
    """Principal globs; absent means any."""
    when: Condition | None = None
    """Condition over the arguments (as the model sent them); absent means always."""
    decision: Literal["approve", "deny"]
    """What to decide."""
    note: str | None = None
    """Why; shown to the model on a denial."""

    _match: CallMatch = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _named_in_errors(
        cls, data: Any, handler: ModelWrapValidatorHandler[AutoApprovalRule]
    ) -> AutoApprovalRule:
        name = data.get("name") if isinstance(data, dict) else None
        with conditions_of(f"auto-approval rule {name!r}" if isinstance(name, str) else ""):
            return handler(data)

    @model_validator(mode="after")
    def _compile(self) -> AutoApprovalRule:
        self._match = CallMatch.build(self.tools, self.principals, self.when)
        return self

    def matches(self, request: ApprovalRequest) -> bool:
        """Whether this rule decides ``request``."""
        return self._match.matches(request.tool, request.arguments, request.principal)


class AutoApprover:
    """An :class:`~orchestrator.approvals.Approver` that applies the first matching rule.

    Abstains (returns None) when no rule matches, leaving the request to a
    human or the request's timeout.
    """

    def __init__(self, rules: Sequence[AutoApprovalRule]) -> None:
        self._rules = tuple(rules)

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """The first matching rule's decision, or None."""
        for rule in self._rules:
            if rule.matches(request):
                return ApprovalDecision(
                    approved=rule.decision == "approve", by=f"auto:{rule.name}", note=rule.note
                )
        return None

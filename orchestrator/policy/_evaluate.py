"""First-match evaluation of a policy for one call."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from orchestrator.policy._model import Decision, Policy, RetrySettings, Rule

__all__ = ["Verdict", "evaluate", "glob_match"]


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def glob_match(name: str, patterns: list[str]) -> bool:
    """Whether ``name`` matches any of the shell-style ``patterns``."""
    return any(_compiled(pattern).match(name) for pattern in patterns)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The policy's answer for one call."""

    decision: Decision
    rule: str | None
    """The matching rule's name; None when the policy's default applied."""
    reason: str
    sandbox_profile: str | None = None
    timeout_s: float | None = None
    retry: RetrySettings | None = None
    approval_timeout_s: float | None = None


def _matches(rule: Rule, tool: str, arguments: dict[str, Any], principal: str | None) -> bool:
    if not glob_match(tool, rule.tools):
        return False
    if rule.principals is not None and not glob_match(principal or "", rule.principals):
        return False
    return rule.when is None or rule.when.matches(arguments)


def evaluate(
    policy: Policy, tool: str, arguments: dict[str, Any], principal: str | None = None
) -> Verdict:
    """The first rule that matches decides; otherwise the policy's default."""
    for rule in policy.rules:
        if _matches(rule, tool, arguments, principal):
            return Verdict(
                decision=rule.decision,
                rule=rule.name,
                reason=rule.reason or f"rule {rule.name!r}",
                sandbox_profile=rule.sandbox_profile,
                timeout_s=rule.timeout_s,
                retry=rule.retry,
                approval_timeout_s=rule.approval_timeout_s,
            )
    return Verdict(
        decision=Decision(policy.default),
        rule=None,
        reason=f"no rule matches {tool}; the policy's default is {policy.default}",
    )

"""Which calls something applies to: tool globs, principal globs and a condition."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.policy._base import compile_globs
from orchestrator.policy._conditions import Condition, Predicate

__all__ = ["CallMatch"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CallMatch:
    """A compiled matcher shared by policy rules and auto-approval rules.

    A call matches when its tool name matches one of ``tools``; when
    ``principals`` is given, the call has a principal matching one of them (a
    call without a principal never matches such a rule); and ``when`` holds
    for its arguments.
    """

    tools: re.Pattern[str]
    principals: re.Pattern[str] | None = None
    when: Predicate | None = None

    @classmethod
    def build(
        cls,
        tools: Sequence[str],
        principals: Sequence[str] | None = None,
        when: Condition | None = None,
    ) -> CallMatch:
        """Compile the globs once; matching is then a couple of ``re.match`` calls."""
        return cls(
            tools=compile_globs(tools),
            principals=None if principals is None else compile_globs(principals),
            when=None if when is None else when.predicate(),
        )

    def matches(self, tool: str, arguments: dict[str, Any], principal: str | None) -> bool:
        """Whether the call falls under this matcher."""
        return self.tools.match(tool) is not None and self.matches_call(arguments, principal)

    def matches_call(self, arguments: dict[str, Any], principal: str | None) -> bool:
        """Whether a call whose tool is already known to match falls under this matcher.

        :func:`~orchestrator.policy.evaluate` inlines this test; change both alike.
        """
        if self.principals is not None and (
            principal is None or self.principals.match(principal) is None
        ):
            return False
        return self.when is None or self.when(arguments)

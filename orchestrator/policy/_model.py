"""The policy file format: rules, rate limits, model limits, redaction."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    field_validator,
    model_validator,
)

from orchestrator.policy._base import STRICT, Globs, LocatedValueError, compile_globs
from orchestrator.policy._conditions import Condition, conditions_of
from orchestrator.policy._match import CallMatch
from orchestrator.policy._re2 import LinearRegex, RegexError

__all__ = ["Effect", "ModelLimits", "Policy", "RateLimit", "RetrySettings", "Rule"]

# Tool names a policy remembers its matching rules for.
_TOOLS_REMEMBERED = 1024


class Effect(StrEnum):
    """What a rule decides for the calls it matches."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class RetrySettings(BaseModel):
    """Retries of infrastructure failures (never of denials or rejections)."""

    model_config = STRICT

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts in all, the first included."""
    max_total_s: float = Field(default=60.0, gt=0)
    """Give up once this much time has passed since the first attempt."""
    retry_on_tool_error: bool = False
    """Also retry when the tool itself failed (off: a tool's failure is a result for the model)."""


class Rule(BaseModel):
    """Matches calls by tool, principal and arguments; the first matching rule decides."""

    model_config = STRICT

    name: str = Field(min_length=1)
    """Unique within the policy; shown in decisions, the audit log and metrics."""
    tools: Globs = Field(min_length=1)
    """Tool-name globs, e.g. ``files.*`` or ``[python.run, shell.run]``; one string is fine."""
    principals: Globs | None = None
    """Principal globs; absent means any caller (a call without a principal matches only then)."""
    when: Condition | None = None
    """Condition over the call's arguments; absent means always."""
    decision: Effect
    """``allow``, ``deny`` or ``require_approval``."""
    reason: str = ""
    """Why; shown to the model when the call is denied, and to the approver."""
    sandbox_profile: str | None = None
    """Sandbox profile for the calls this rule lets through (absent: the tool's own)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Wall-clock deadline for these calls, in seconds (absent: the profile's)."""
    retry: RetrySettings | None = None
    """Retry settings for these calls (absent: the gateway's defaults)."""
    approval_timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """How long a ``require_approval`` call waits for a decision (absent: the policy's)."""

    _match: CallMatch = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _named_in_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Rule]) -> Rule:
        name = data.get("name") if isinstance(data, dict) else None
        with conditions_of(f"rule {name!r}" if isinstance(name, str) else ""):
            return handler(data)

    @model_validator(mode="after")
    def _compile(self) -> Rule:
        if self.approval_timeout_s is not None and self.decision is not Effect.REQUIRE_APPROVAL:
            raise LocatedValueError(
                "only a require_approval rule waits for approval", ("approval_timeout_s",)
            )
        self._match = CallMatch.build(self.tools, self.principals, self.when)
        return self

    @property
    def match(self) -> CallMatch:
        """The compiled matcher of this rule."""
        return self._match


class RateLimit(BaseModel):
    """A budget: ``rate`` calls every ``per_s`` seconds, with bursts of up to ``burst`` calls.

    ``{rate: 30, per_s: 60, burst: 5}`` allows 5 calls at once, then one every
    2 seconds on average.
    """

    model_config = STRICT

    name: str = Field(min_length=1)
    """Unique within the policy; shown in refusals and metrics."""
    tools: Globs = Field(min_length=1)
    """Tool-name globs of the calls this limit counts."""
    scope: Literal["run", "principal", "global"]
    """Whose calls share one budget: each run's own, each principal's own, or everyone's."""
    rate: float = Field(gt=0, allow_inf_nan=False)
    """Calls allowed per period, sustained."""
    per_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    """The period, in seconds."""
    burst: int = Field(default=1, ge=1)
    """Calls allowed back to back before the rate applies."""

    _tools: re.Pattern[str] = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> RateLimit:
        # The limit is kept as float seconds: a spacing or burst window that
        # overflows to infinity would let every call through (inf - inf is nan,
        # and nothing compares true with nan), and a burst too large for a
        # float would stop the gateway at startup.
        try:
            window = float(self.burst) * self.interval_s
        except OverflowError:
            window = math.inf
        if not math.isfinite(window):
            raise LocatedValueError(
                "burst calls at rate per per_s seconds span more time than can be counted "
                f"(rate {self.rate:g}, per_s {self.per_s:g}); make rate larger, or per_s or "
                "burst smaller",
                ("burst",),
            )
        self._tools = compile_globs(self.tools)
        return self

    def counts(self, tool: str) -> bool:
        """Whether calls of ``tool`` count against this limit."""
        return self._tools.match(tool) is not None

    @property
    def interval_s(self) -> float:
        """Seconds between calls at the sustained rate."""
        return self.per_s / self.rate


class ModelLimits(BaseModel):
    """Budgets on the model side of one run."""

    model_config = STRICT

    max_tokens_per_run: int | None = Field(default=None, ge=1)
    """Tokens (prompt and completion) one run may use; absent means no limit."""
    max_model_calls_per_run: int | None = Field(default=None, ge=1)
    """Model calls one run may make; absent means no limit."""


class Policy(BaseModel):
    """An organisation's policy: the ordered rules every tool call is checked against."""

    model_config = STRICT

    version: Literal[1]
    """Format version; always ``1``."""
    default: Literal["allow", "deny"] = "deny"
    """Decision for a call no rule matches."""
    on_approval_timeout: Literal["allow", "deny"] = "deny"
    """Decision when nobody decides an approval request in time."""
    approval_timeout_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    """How long a ``require_approval`` call waits, unless its rule says otherwise."""
    rules: list[Rule] = Field(default_factory=list)
    """Checked in order; the first match decides."""
    rate_limits: list[RateLimit] = Field(default_factory=list)
    """Every limit that counts a call must have room for it, or the call waits."""
    model_limits: ModelLimits = Field(default_factory=ModelLimits)
    """Token and model-call budgets per run."""
    redact: list[str] = Field(default_factory=list)
    """Regular expressions (RE2 syntax) for secrets: matches in strings of the audit log are
    replaced, and a mapping entry whose key matches has its whole value replaced."""

    _redact: tuple[LinearRegex, ...] = PrivateAttr(default=())
    _table: tuple[tuple[CallMatch, Rule], ...] = PrivateAttr(default=())
    _by_tool: dict[str, tuple[tuple[CallMatch, Rule], ...]] = PrivateAttr(default_factory=dict)

    @field_validator("redact")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                LinearRegex(pattern)
            except RegexError as exc:
                raise LocatedValueError(str(exc), (index,)) from None
        return patterns

    @model_validator(mode="after")
    def _names_unique(self) -> Policy:
        # Names key audit records, metrics and rate-limit state, so a repeat is a mistake.
        named: tuple[tuple[str, list[str]], ...] = (
            ("rules", [rule.name for rule in self.rules]),
            ("rate_limits", [limit.name for limit in self.rate_limits]),
        )
        for field, names in named:
            first: dict[str, int] = {}
            for index, name in enumerate(names):
                if name in first:
                    raise LocatedValueError(
                        f"duplicate name {name!r} (first used by {field}[{first[name]}])",
                        (field, index, "name"),
                    )
                first[name] = index
        self._redact = tuple(LinearRegex(pattern) for pattern in self.redact)
        # Reading a pydantic private attribute costs microseconds; rules_for
        # reads this one table instead of one attribute per rule.
        self._table = tuple((rule.match, rule) for rule in self.rules)
        return self

    def rules_for(self, tool: str) -> tuple[tuple[CallMatch, Rule], ...]:
        """The rules whose tool globs match ``tool``, in order, with their matchers.

        Worked out once per tool name and kept (up to a bound, as names come
        from callers), so evaluating a call skips every other tool's rules.
        """
        by_tool = self._by_tool
        found = by_tool.get(tool)
        if found is None:
            found = tuple(entry for entry in self._table if entry[0].tools.match(tool))
            if len(by_tool) < _TOOLS_REMEMBERED:
                by_tool[tool] = found
        return found

    @property
    def redact_patterns(self) -> tuple[LinearRegex, ...]:
        """The ``redact`` patterns, compiled for RE2."""
        return self._redact

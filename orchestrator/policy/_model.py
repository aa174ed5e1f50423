"""The policy file format: rules, rate limits, model limits, redaction."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.policy._conditions import Condition

__all__ = ["Decision", "ModelLimits", "Policy", "RateLimit", "RetrySettings", "Rule"]


class Decision(StrEnum):
    """What a rule decides for the calls it matches."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


Globs = list[str]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class RetrySettings(BaseModel):
    """Retries of infrastructure failures (never of denials or rejections)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts in all, the first included."""
    max_total_s: float = Field(default=60.0, gt=0)
    """Give up once this much time has passed since the first attempt."""
    retry_on_tool_error: bool = False
    """Also retry when the tool itself failed (off: a tool's failure is a result)."""


class Rule(BaseModel):
    """Matches calls by tool, principal and arguments; the first matching rule decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Shown in decisions, the audit log and metrics."""
    tools: Globs
    """Tool-name globs, e.g. ``files.*`` or ``[python.run, shell.run]``."""
    principals: Globs | None = None
    """Principal globs; absent means any principal."""
    when: Condition | None = None
    """Condition over the arguments; absent means always."""
    decision: Decision
    """``allow``, ``deny`` or ``require_approval``."""
    reason: str = ""
    """Why; shown to the model when the call is denied."""
    sandbox_profile: str | None = None
    """Sandbox profile for the calls this rule allows (default: the tool's)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Deadline for these calls (at most the profile's)."""
    retry: RetrySettings | None = None
    """Retry settings for these calls."""
    approval_timeout_s: float | None = Field(default=None, gt=0)
    """How long a ``require_approval`` call waits for a decision."""

    @field_validator("tools", "principals", mode="before")
    @classmethod
    def _globs_as_list(cls, value: object) -> object:
        return _as_list(value)


class RateLimit(BaseModel):
    """A budget per scope: ``rate`` calls every ``per_s`` seconds, bursts up to ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Shown in ``rate_limited`` answers."""
    tools: Globs
    """Tool-name globs this limit counts."""
    scope: Literal["run", "principal", "global"]
    """Whose calls share the budget: one run's, one principal's, or everyone's."""
    rate: float = Field(gt=0)
    """Calls allowed per period, sustained."""
    per_s: float = Field(default=60.0, gt=0)
    """The period in seconds."""
    burst: int = Field(default=1, ge=1)
    """Calls allowed back to back before the rate applies."""

    @field_validator("tools", mode="before")
    @classmethod
    def _globs_as_list(cls, value: object) -> object:
        return _as_list(value)


class ModelLimits(BaseModel):
    """Limits on the model side of one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens_per_run: int | None = Field(default=None, ge=1)
    """Tokens (prompt and completion) one run may use."""
    max_model_calls_per_run: int | None = Field(default=None, ge=1)
    """Model calls one run may make."""


class Policy(BaseModel):
    """An organisation's policy: the ordered rules every tool call is checked against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    """Format version."""
    default: Literal["allow", "deny"] = "deny"
    """Decision for a call no rule matches."""
    on_approval_timeout: Literal["allow", "deny"] = "deny"
    """Decision when an approval request times out."""
    rules: list[Rule] = Field(default_factory=list)
    """Checked in order; the first match decides."""
    rate_limits: list[RateLimit] = Field(default_factory=list)
    """Every matching limit must have room for a call to proceed."""
    model_limits: ModelLimits = Field(default_factory=ModelLimits)
    """Token and model-call budgets per run."""
    redact: list[str] = Field(default_factory=list)
    """Regular expressions whose matches are replaced in the audit log."""

    @field_validator("redact")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return patterns

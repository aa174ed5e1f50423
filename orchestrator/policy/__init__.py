"""Policy: ordered rules over tool calls, rate limits, and the file format behind them."""

from typing import Any

from orchestrator.policy._conditions import AllOf, AnyOf, Condition, Leaf, NotOf
from orchestrator.policy._evaluate import Verdict, evaluate, glob_match
from orchestrator.policy._loader import load_policy, parse_policy
from orchestrator.policy._model import (
    Decision,
    ModelLimits,
    Policy,
    RateLimit,
    RetrySettings,
    Rule,
)
from orchestrator.policy._ratelimit import RateLimitAnswer, RateLimiter

__all__ = [
    "AllOf",
    "AnyOf",
    "Condition",
    "Decision",
    "Leaf",
    "ModelLimits",
    "NotOf",
    "Policy",
    "RateLimit",
    "RateLimitAnswer",
    "RateLimiter",
    "RetrySettings",
    "Rule",
    "Verdict",
    "evaluate",
    "glob_match",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
]


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy file format, for editors."""
    schema = Policy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stockade policy"
    return schema

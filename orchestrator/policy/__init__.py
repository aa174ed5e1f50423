"""Policy: ordered rules over tool calls, rate limits, model budgets, and their file format.

Load a file with :func:`load_policy`, decide a call with :func:`evaluate`, and
count calls with a :class:`RateLimiter` built from ``policy.rate_limits``.
Everything here is pure logic: no I/O beyond reading the policy file.
"""

from orchestrator.policy._base import Globs
from orchestrator.policy._budget import ModelBudget, ModelBudgetAnswer
from orchestrator.policy._conditions import AllOf, AnyOf, Condition, Leaf, NotOf, Predicate
from orchestrator.policy._evaluate import Decision, evaluate
from orchestrator.policy._limitstore import BudgetUsage, LimitStore, RateCell, RateVerdict
from orchestrator.policy._loader import load_policy, parse_policy, parse_yaml_model
from orchestrator.policy._match import CallMatch
from orchestrator.policy._memory_limits import InMemoryLimitStore
from orchestrator.policy._model import (
    Effect,
    ModelLimits,
    Policy,
    RateLimit,
    RetrySettings,
    Rule,
)
from orchestrator.policy._ratelimit import RateLimitAnswer, RateLimiter
from orchestrator.policy._schema import policy_json_schema, render_policy_schema
from orchestrator.policy._sqlite_limits import SqliteLimitStore

__all__ = [
    "AllOf",
    "AnyOf",
    "BudgetUsage",
    "CallMatch",
    "Condition",
    "Decision",
    "Effect",
    "Globs",
    "InMemoryLimitStore",
    "Leaf",
    "LimitStore",
    "ModelBudget",
    "ModelBudgetAnswer",
    "ModelLimits",
    "NotOf",
    "Policy",
    "Predicate",
    "RateCell",
    "RateLimit",
    "RateLimitAnswer",
    "RateLimiter",
    "RateVerdict",
    "RetrySettings",
    "Rule",
    "SqliteLimitStore",
    "evaluate",
    "load_policy",
    "parse_policy",
    "parse_yaml_model",
    "policy_json_schema",
    "render_policy_schema",
]

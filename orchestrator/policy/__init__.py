"""Policy: ordered rules over tool calls, rate limits, model budgets, and their file format.

Load a file with :func:`load_policy`, decide a call with :func:`evaluate`, and
count calls with a :class:`RateLimiter` built from ``policy.rate_limits``.
Policy tests (:func:`load_policy_tests`, :func:`run_policy_tests`) state what a
policy must do with given calls, for CI to hold. Everything here is pure
logic: no I/O beyond reading policy and test files.
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
from orchestrator.policy._redis_limits import OnUnavailable, RedisLimitStore, describe_redis_url
from orchestrator.policy._schema import policy_json_schema, render_policy_schema
from orchestrator.policy._sqlite_limits import SqliteLimitStore
from orchestrator.policy._suite import (
    LoadedPolicyTests,
    PolicyTestCall,
    PolicyTestCase,
    PolicyTestExpectation,
    PolicyTestFile,
    load_policy_tests,
    policy_tests_json_schema,
    render_policy_tests_schema,
)
from orchestrator.policy._suite_runner import CaseOutcome, PolicyTestReport, run_policy_tests

__all__ = [
    "AllOf",
    "AnyOf",
    "BudgetUsage",
    "CallMatch",
    "CaseOutcome",
    "Condition",
    "Decision",
    "Effect",
    "Globs",
    "InMemoryLimitStore",
    "Leaf",
    "LimitStore",
    "LoadedPolicyTests",
    "ModelBudget",
    "ModelBudgetAnswer",
    "ModelLimits",
    "NotOf",
    "OnUnavailable",
    "Policy",
    "PolicyTestCall",
    "PolicyTestCase",
    "PolicyTestExpectation",
    "PolicyTestFile",
    "PolicyTestReport",
    "Predicate",
    "RateCell",
    "RateLimit",
    "RateLimitAnswer",
    "RateLimiter",
    "RateVerdict",
    "RedisLimitStore",
    "RetrySettings",
    "Rule",
    "SqliteLimitStore",
    "describe_redis_url",
    "evaluate",
    "load_policy",
    "load_policy_tests",
    "parse_policy",
    "parse_yaml_model",
    "policy_json_schema",
    "policy_tests_json_schema",
    "render_policy_schema",
    "render_policy_tests_schema",
    "run_policy_tests",
]

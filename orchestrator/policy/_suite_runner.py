"""Running policy tests: each case's call through the policy, and what it reached.

Each case stands alone: its decision comes from :func:`evaluate`, as the
gateway's; a rate-limit case counts its calls in fresh in-memory limits on a
simulated clock, in the gateway's order (a denied call never reaches the
limits). A failure says what happened instead, naming the rule that matched
and its line in the policy file; an expectation naming a rule or a limit the
policy does not have says so (renamed or removed), so a stale test cannot
pass by accident. Coverage lists the rules no case's call reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.policy._evaluate import Decision, evaluate
from orchestrator.policy._memory_limits import InMemoryLimitStore
from orchestrator.policy._model import Effect, Policy
from orchestrator.policy._ratelimit import RateLimiter
from orchestrator.policy._suite import LoadedPolicyTests, PolicyTestCase
from orchestrator.yamlfile import line_of

__all__ = ["CaseOutcome", "PolicyTestReport", "run_policy_tests"]

DEFAULT_RULE = "(default)"
"""How a decision by the policy's default, no rule, is named in reports."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CaseOutcome:
    """One case run: whether it held, and what the policy did."""

    file: Path
    """The test file."""
    line: int | None
    """The line the case starts on."""
    name: str
    """The case's name."""
    ok: bool
    """The expectation held."""
    problems: tuple[str, ...] = ()
    """What did not hold, one sentence each."""
    decision: str = ""
    """The decision the policy made for the call."""
    rule: str | None = None
    """The rule that decided (None: the default)."""
    rule_line: int | None = None
    """That rule's line in the policy file."""
    allowed_calls: int | None = None
    """For a rate-limit case: calls allowed before the first refusal (None if none came)."""
    refused_by: str | None = None
    """For a rate-limit case: the limit that refused."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "file": str(self.file),
            "line": self.line,
            "name": self.name,
            "ok": self.ok,
            "problems": list(self.problems),
            "got": {
                "decision": self.decision,
                "rule": self.rule,
                "rule_line": self.rule_line,
                "allowed_calls": self.allowed_calls,
                "refused_by": self.refused_by,
            },
        }


@dataclass(kw_only=True)
class PolicyTestReport:
    """Every case of every file, and the rules none of them reached."""

    policy: Path
    """The policy file tested."""
    outcomes: list[CaseOutcome] = field(default_factory=list)
    """Each case, in file order."""
    unreached_rules: list[str] = field(default_factory=list)
    """Rules of the policy that decided no case's call, in policy order."""
    default_reached: bool = False
    """Some case's call fell through to the policy's default."""

    @property
    def failed(self) -> list[CaseOutcome]:
        """The cases whose expectation did not hold."""
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def ok(self) -> bool:
        """Every case held."""
        return not self.failed


class _Run:
    """One policy under test: its rules' lines, and the rules reached so far."""

    def __init__(self, policy: Policy, source: Path) -> None:
        self.policy = policy
        self.source = source
        self.rule_names = {rule.name: index for index, rule in enumerate(policy.rules)}
        self.limit_names = {limit.name for limit in policy.rate_limits}
        self.reached: set[str] = set()
        self.default_reached = False
        self._lines: dict[str, int | None] = {}

    def rule_line(self, rule: str | None) -> int | None:
        if rule is None:
            return None
        if rule not in self._lines:
            index = self.rule_names[rule]
            self._lines[rule] = line_of(self.source, ("rules", index))
        return self._lines[rule]

    def decide(self, case: PolicyTestCase) -> Decision:
        call = case.call
        decision = evaluate(self.policy, call.tool, call.arguments, call.principal)
        if decision.rule is None:
            self.default_reached = True
        else:
            self.reached.add(decision.rule)
        return decision

    def described(self, decision: Decision) -> str:
        if decision.rule is None:
            return f"{decision.decision.value} by the policy's default (no rule matches)"
        line = self.rule_line(decision.rule)
        where = f" ({self.source}:{line})" if line else ""
        return f"{decision.decision.value} by rule {decision.rule!r}{where}"


def _decision_problems(run: _Run, case: PolicyTestCase, decision: Decision) -> list[str]:
    expect = case.expect
    problems: list[str] = []
    if expect.expects("rule") and expect.rule is not None and expect.rule not in run.rule_names:
        problems.append(
            f"expected rule {expect.rule!r}, which is not in the policy (renamed or removed?); "
            f"the call was decided {run.described(decision)}"
        )
        return problems
    wanted_effect = expect.decision
    if wanted_effect is not None and decision.decision is not wanted_effect:
        problems.append(f"expected {wanted_effect.value}, got {run.described(decision)}")
    if expect.expects("rule") and decision.rule != expect.rule:
        wanted = f"rule {expect.rule!r}" if expect.rule else "the policy's default"
        problems.append(f"expected {wanted} to decide, got {run.described(decision)}")
    if problems:
        return problems  # the profile and deadline of the wrong rule say nothing more
    if expect.expects("profile") and decision.sandbox_profile != expect.profile:
        problems.append(
            f"expected sandbox profile {expect.profile!r}, got {decision.sandbox_profile!r} "
            f"(decided {run.described(decision)})"
        )
    if expect.expects("timeout_s") and decision.timeout_s != expect.timeout_s:
        problems.append(
            f"expected timeout_s {expect.timeout_s!r}, got {decision.timeout_s!r} "
            f"(decided {run.described(decision)})"
        )
    return problems


def _rate_problems(
    run: _Run, case: PolicyTestCase, decision: Decision
) -> tuple[list[str], int | None, str | None]:
    expect = case.expect
    wanted = expect.rate_limited_after
    assert wanted is not None
    if expect.limit is not None and expect.limit not in run.limit_names:
        return (
            [f"expected rate limit {expect.limit!r}, which is not in the policy "
             "(renamed or removed?)"],
            None,
            None,
        )  # fmt: skip
    if decision.decision is Effect.DENY:
        return (
            [f"the call is denied ({run.described(decision)}), so it never reaches the rate "
             "limits"],
            None,
            None,
        )  # fmt: skip
    now = [0.0]
    limiter = RateLimiter(run.policy.rate_limits, store=InMemoryLimitStore(clock=lambda: now[0]))
    call = case.call
    allowed = 0
    # One call past the expectation, and a bound in case no limit ever refuses.
    for _ in range(wanted + 1):
        answer = limiter.check(call.tool, run_id=call.run, principal=call.principal)
        if not answer.allowed:
            return _rate_verdict(expect.limit, wanted, allowed, answer.limit), allowed, answer.limit
        allowed += 1
        now[0] += case.every_s
    return (
        [f"expected a rate limit to refuse call {wanted + 1}, but all {allowed} were allowed"],
        None,
        None,
    )


def _rate_verdict(
    limit: str | None, wanted: int, allowed: int, refused_by: str | None
) -> list[str]:
    problems = []
    if allowed != wanted:
        problems.append(
            f"expected {wanted} calls allowed before a refusal, got {allowed} "
            f"(refused by limit {refused_by!r})"
        )
    if limit is not None and refused_by != limit:
        problems.append(f"expected limit {limit!r} to refuse, got {refused_by!r}")
    return problems


def _run_case(run: _Run, tests: LoadedPolicyTests, index: int) -> CaseOutcome:
    case = tests.tests.cases[index]
    decision = run.decide(case)
    problems = _decision_problems(run, case, decision)
    allowed: int | None = None
    refused_by: str | None = None
    if case.expect.rate_limited_after is not None and not problems:
        rate_problems, allowed, refused_by = _rate_problems(run, case, decision)
        problems += rate_problems
    return CaseOutcome(
        file=tests.path,
        line=tests.line_of(index),
        name=case.name,
        ok=not problems,
        problems=tuple(problems),
        decision=decision.decision.value,
        rule=decision.rule,
        rule_line=run.rule_line(decision.rule),
        allowed_calls=allowed,
        refused_by=refused_by,
    )


def run_policy_tests(
    policy: Policy, source: str | Path, suites: list[LoadedPolicyTests]
) -> PolicyTestReport:
    """Run every case of ``suites`` against ``policy`` (read from ``source``)."""
    run = _Run(policy, Path(source))
    report = PolicyTestReport(policy=Path(source))
    for tests in suites:
        for index in range(len(tests.tests.cases)):
            report.outcomes.append(_run_case(run, tests, index))
    report.unreached_rules = [rule.name for rule in policy.rules if rule.name not in run.reached]
    report.default_reached = run.default_reached
    return report

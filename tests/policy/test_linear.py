"""No argument makes a decision, an auto-approval or a redaction expensive (RE2), and a
pattern RE2 cannot run is a configuration error naming file, line, rule and field.

Times are CPU seconds of this process, with bounds far above what RE2 needs
(milliseconds) and far below what Python's backtracking ``re`` took before
(``"rm -" + "r" * 40000`` under the default policy: 12 s; ``(a+)+$`` on 40
characters: days).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.approvals import ApprovalRequest, ApprovalStatus, AutoApprover
from orchestrator.approvals._config import load_approvers
from orchestrator.audit import REDACTED, redact
from orchestrator.errors import ConfigError
from orchestrator.policy import Effect, evaluate, load_policy, parse_policy
from orchestrator.tools import MAX_ARGUMENT_BYTES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_policy(ROOT / "policies" / "default.yaml")
LARGEST = MAX_ARGUMENT_BYTES - len(json.dumps({"command": ""}))
"""The longest single string argument the registry admits."""
NESTED = "(a+)+$"
"""Exponential in a backtracking engine: each extra `a` doubles the work."""


def cpu_seconds(action: Callable[[], Any], *, runs: int = 1) -> float:
    """The least CPU time of ``runs`` runs (the least is the one others disturbed least)."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        action()
        best = min(best, time.process_time() - started)
    return best


def test_the_findings_command_is_decided_at_once() -> None:
    arguments = {"command": "rm -" + "r" * 40_000}
    decision = evaluate(DEFAULT, "shell.run", arguments)
    # An rm with a recursive flag (the old pattern missed it: no space after the flag).
    assert (decision.decision, decision.rule) == (
        Effect.REQUIRE_APPROVAL,
        "shell-destructive-needs-approval",
    )
    assert cpu_seconds(lambda: evaluate(DEFAULT, "shell.run", arguments)) < 0.1


def test_decision_time_grows_linearly_up_to_the_largest_argument() -> None:
    def decide(size: int) -> Callable[[], Any]:
        arguments = {"command": "rm -" + "r" * (size - 4)}
        return lambda: evaluate(DEFAULT, "shell.run", arguments)

    eighth = cpu_seconds(decide(LARGEST // 8), runs=5)
    whole = cpu_seconds(decide(LARGEST), runs=5)
    assert whole < 0.1
    # Eight times the argument: eight times the time when linear, 64 when quadratic.
    assert whole < 20 * max(eighth, 1e-4)


def nested_rule_policy() -> Any:
    return parse_policy(
        "version: 1\nrules:\n"
        f"  - {{name: nested, tools: t, when: {{arg: x, regex: '{NESTED}'}}, decision: deny}}\n"
        "  - {name: rest, tools: t, decision: allow}\n"
    )


@pytest.mark.parametrize("length", [40, LARGEST - 1])
def test_a_nested_quantifier_in_a_rule_costs_nothing(length: int) -> None:
    policy = nested_rule_policy()
    arguments = {"x": "a" * length + "b"}
    assert cpu_seconds(lambda: evaluate(policy, "t", arguments)) < 0.1
    assert evaluate(policy, "t", arguments).rule == "rest"
    assert evaluate(policy, "t", {"x": "b" + "a" * length}).rule == "nested"


async def test_a_nested_quantifier_in_an_auto_approval_rule_costs_nothing(
    tmp_path: Path,
) -> None:
    file = tmp_path / "approvers.yaml"
    file.write_text(
        "auto:\n"
        f"  - {{name: a, tools: t, when: {{arg: x, regex: '{NESTED}'}}, decision: approve}}\n"
    )
    approver = AutoApprover(load_approvers(file).auto)
    request = ApprovalRequest(
        id="r", tool="t", arguments={"x": "a" * 40 + "b"}, rule=None, reason="",
        principal=None, run_id=None, status=ApprovalStatus.PENDING, created_at=0, expires_at=60,
    )  # fmt: skip
    started = time.process_time()
    assert await approver(request) is None
    assert time.process_time() - started < 0.1


@pytest.mark.parametrize(
    "glob",
    ["*a*a*a*a*a*a*a*a*b", "*" + "a" * 200 + "b*", "*" + "?" * 500 + "c", "a*" * 50 + "c"],
)
def test_glob_conditions_do_not_backtrack(glob: str) -> None:
    policy = parse_policy(
        "version: 1\nrules:\n"
        f"  - {{name: g, tools: t, when: {{arg: x, glob: '{glob}'}}, decision: deny}}\n"
    )
    arguments = {"x": "a" * LARGEST}
    assert cpu_seconds(lambda: evaluate(policy, "t", arguments)) < 0.5
    assert evaluate(policy, "t", arguments).rule is None


def test_lone_surrogates_are_matched_and_kept() -> None:
    # JSON may carry "\ud800"; RE2 gets UTF-8 bytes, so the string must survive encoding.
    command = "\ud800 rm -rf build"
    assert evaluate(DEFAULT, "shell.run", {"command": command}).decision is Effect.REQUIRE_APPROVAL
    secret = "sk-" + "a" * 30
    assert redact({"x": f"\ud800{secret}\udfff"}, DEFAULT.redact) == {
        "x": f"\ud800{REDACTED}\udfff"
    }
    policy = parse_policy(
        "version: 1\nrules:\n  - {name: s, tools: t, when: {arg: x, regex: 'a.b'}, decision: deny}\n"
    )
    assert evaluate(policy, "t", {"x": "a\udc80b"}).rule == "s"


RULE_HEAD = "version: 1\nrules:\n  - name: ok\n    tools: x\n    decision: allow\n"
UNSUPPORTED = [
    ("(?=x)y", "lookahead is not supported"),
    ("(?<!x)y", "lookbehind is not supported"),
    (r"(a)\1", "backreferences are not supported"),
    (r"end\Z", r"write \z"),
    ("(?x) a b", "verbose mode"),
    ("a{1001}", "counted repetition stops at {1000}"),
    ("(x", "missing )"),
    ("x{,3}", "write {0,n}"),  # Python: up to 3; RE2: the text "x{,3}"
]


@pytest.mark.parametrize(("pattern", "hint"), UNSUPPORTED)
def test_a_pattern_re2_cannot_run_names_file_line_rule_and_field(
    tmp_path: Path, pattern: str, hint: str
) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(
        RULE_HEAD + "  - name: shell-check\n    tools: shell.run\n    when:\n      any:\n"
        "        - {arg: command, equals: x}\n"
        f"        - {{arg: command, regex: '{pattern}'}}\n"
        "    decision: deny\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(file)
    error = caught.value
    assert (error.file, error.line, error.field) == (str(file), 11, "rules[1].when.any[1].regex")
    assert f"rule 'shell-check': invalid regular expression {pattern!r} (RE2 syntax)" in str(error)
    assert hint in str(error)


def test_a_redact_pattern_re2_cannot_run_names_its_line(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("version: 1\nredact:\n  - 'sk-\\w+'\n  - '(?<=key=)\\w+'\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(file)
    assert (caught.value.line, caught.value.field) == (4, "redact[1]")
    assert "lookbehind is not supported" in str(caught.value)


def test_an_auto_approval_pattern_re2_cannot_run_names_the_rule(tmp_path: Path) -> None:
    file = tmp_path / "approvers.yaml"
    file.write_text(
        "auto:\n  - name: build\n    tools: shell.run\n"
        "    when: {arg: command, regex: '^rm (?!-rf /)'}\n    decision: approve\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_approvers(file)
    assert (caught.value.line, caught.value.field) == (4, "auto[0].when.regex")
    assert "auto-approval rule 'build': invalid regular expression" in str(caught.value)

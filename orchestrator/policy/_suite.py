"""Policy tests as files: calls, and what the policy must do with each.

A test file (YAML, read through :mod:`orchestrator.yamlfile`: line-numbered
errors, no aliases) lists cases. Each case is a call — tool, arguments,
principal, run — and an expectation: the decision and the rule that makes it
(and the rule's profile and deadline), or that the call is rate-limited after
N calls. ``stockade policy test POLICY TESTS...`` runs them (see
:mod:`orchestrator.policy._suite_runner`)::

    version: 1
    cases:
      - name: rm -rf needs a human
        call: {tool: shell.run, arguments: {command: "rm -rf build"}, principal: ada}
        expect: {decision: require_approval, rule: shell-destructive-needs-approval}
      - name: a principal gets five fetches at once, then waits
        call: {tool: http.fetch, arguments: {url: "https://example.org"}, principal: ada}
        expect: {rate_limited_after: 5, limit: http-per-principal}

Rules decide on the tool, the principal and the arguments; no rule depends on
the time of day. Time matters to rate limits only: a rate-limit case makes
its calls on a simulated clock, ``every_s`` apart, so the case gives the same
answer on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import Field, model_validator

from orchestrator.policy._model import Effect
from orchestrator.strict import LocatedValueError, StrictModel
from orchestrator.yamlfile import compose_yaml, load_yaml_model, read_yaml_text

__all__ = [
    "LoadedPolicyTests",
    "PolicyTestCall",
    "PolicyTestCase",
    "PolicyTestExpectation",
    "PolicyTestFile",
    "load_policy_tests",
    "policy_tests_json_schema",
    "render_policy_tests_schema",
]


class PolicyTestCall(StrictModel):
    """The call a case makes, as the gateway would see it after validation."""

    tool: str = Field(min_length=1)
    """The tool's name, e.g. ``shell.run``."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The call's arguments (conditions on an argument left out are false)."""
    principal: str | None = None
    """Who the call acts for; absent: no principal (rules naming principals do not match)."""
    run: str | None = None
    """The run the call belongs to (run-scoped rate limits count per run)."""


class PolicyTestExpectation(StrictModel):
    """What must happen to the call: a decision, or a rate limit after a number of calls.

    Fields left out are not checked. ``rule: null`` expects the policy's default
    to decide (no rule matches); ``profile: null`` and ``timeout_s: null`` expect
    the deciding rule to set none.
    """

    decision: Effect | None = None
    """``allow``, ``deny`` or ``require_approval``."""
    rule: str | None = None
    """The rule that must decide; null: the policy's default, no rule."""
    profile: str | None = None
    """The sandbox profile the deciding rule names; null: it names none (the tool's own)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """The deadline the deciding rule sets, in seconds; null: it sets none."""
    rate_limited_after: int | None = Field(default=None, ge=1)
    """The call is allowed this many times in a row, then the next one is refused by a rate
    limit (with the case's ``every_s`` between calls)."""
    limit: str | None = None
    """With ``rate_limited_after``: the rate limit that must refuse."""

    @model_validator(mode="after")
    def _something_expected(self) -> Self:
        given = self.model_fields_set
        if not given:
            raise ValueError(
                "expect at least one of decision, rule, profile, timeout_s, rate_limited_after"
            )
        if "limit" in given and self.rate_limited_after is None:
            raise LocatedValueError("limit needs rate_limited_after", ("limit",))
        return self

    def expects(self, field: str) -> bool:
        """Whether the file set ``field`` (to a value, or to null)."""
        return field in self.model_fields_set


class PolicyTestCase(StrictModel):
    """One call and what the policy must do with it."""

    name: str = Field(min_length=1)
    """Unique within the file; shown in failures."""
    call: PolicyTestCall
    """The call."""
    expect: PolicyTestExpectation
    """What must happen."""
    every_s: float = Field(default=0.0, ge=0)
    """For a rate-limit case: simulated seconds between its calls (0: back to back)."""


class PolicyTestFile(StrictModel):
    """A file of policy tests."""

    version: Literal[1]
    """Format version; always ``1``."""
    cases: list[PolicyTestCase] = Field(min_length=1)
    """The cases, run in order, each on its own (rate limits start empty for each)."""

    @model_validator(mode="after")
    def _names_unique(self) -> Self:
        first: dict[str, int] = {}
        for index, case in enumerate(self.cases):
            if case.name in first:
                raise LocatedValueError(
                    f"duplicate case name {case.name!r} (first used by cases[{first[case.name]}])",
                    ("cases", index, "name"),
                )
            first[case.name] = index
        return self


class LoadedPolicyTests:
    """A test file, validated, with the line each case starts on."""

    def __init__(self, path: Path, tests: PolicyTestFile, lines: list[int]) -> None:
        self.path = path
        self.tests = tests
        self.lines = lines

    def line_of(self, index: int) -> int | None:
        """The line case ``index`` starts on."""
        return self.lines[index] if index < len(self.lines) else None


def _case_lines(text: str, source: str) -> list[int]:
    root = compose_yaml(text, source)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        is_cases = isinstance(key, yaml.ScalarNode) and key.value == "cases"
        if is_cases and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def load_policy_tests(path: str | Path) -> LoadedPolicyTests:
    """Read and validate a test file; mistakes raise a ConfigError naming file, line and field."""
    path = Path(path)
    tests = load_yaml_model(path, PolicyTestFile, what="policy test file")
    lines = _case_lines(read_yaml_text(path, what="policy test file"), str(path))
    return LoadedPolicyTests(path, tests, lines)


def policy_tests_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of policy test files."""
    schema = PolicyTestFile.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Stockade policy tests",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def render_policy_tests_schema() -> str:
    """The schema exactly as committed in ``policies/policy-tests.schema.json``.

    Regenerate with ``stockade policy schema --tests > policies/policy-tests.schema.json``;
    a test keeps the file and the code in step.
    """
    return json.dumps(policy_tests_json_schema(), indent=2) + "\n"

"""Every condition operator and combinator, as a table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.policy import AllOf, Effect, Leaf, NotOf, Rule, evaluate, parse_policy

ARGS: dict[str, Any] = {
    "code": "import os\nprint(1)",
    "mode": "fast",
    "n": 5,
    "x": 2.5,
    "flag": True,
    "zero": 0,
    "path": "src/pkg/main.py",
    "items": [1, 2, 3],
    "empty": "",
    "word": "café",
    "line": "x\n",
    "opts": {"level": "high", "list": ["a", "b"], "nested": {"deep": None}},
}


def matches(when: Any, arguments: dict[str, Any] = ARGS) -> bool:
    rule = {"name": "r", "tools": "t", "when": when, "decision": "allow"}
    policy = parse_policy(json.dumps({"version": 1, "rules": [rule]}))  # JSON is YAML
    return evaluate(policy, "t", arguments).decision is Effect.ALLOW


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # equals: JSON equality, so booleans are not numbers and strings are not numbers
        ({"arg": "mode", "equals": "fast"}, True),
        ({"arg": "mode", "equals": "slow"}, False),
        ({"arg": "n", "equals": 5}, True),
        ({"arg": "n", "equals": 5.0}, True),
        ({"arg": "n", "equals": "5"}, False),
        ({"arg": "flag", "equals": True}, True),
        ({"arg": "flag", "equals": 1}, False),
        ({"arg": "zero", "equals": False}, False),
        ({"arg": "items", "equals": [1, 2, 3]}, True),
        ({"arg": "opts.nested.deep", "equals": None}, True),
        # one_of
        ({"arg": "mode", "one_of": ["slow", "fast"]}, True),
        ({"arg": "mode", "one_of": ["slow"]}, False),
        ({"arg": "flag", "one_of": [1, 2]}, False),
        # regex: an RE2 search (linear time), on strings only
        ({"arg": "code", "regex": r"import\s+os"}, True),
        ({"arg": "code", "regex": r"^print"}, False),
        ({"arg": "code", "regex": r"(?m)^print"}, True),
        ({"arg": "code", "regex": r"(?i)IMPORT\s+OS"}, True),
        ({"arg": "n", "regex": "5"}, False),
        # RE2, not Python: \w \d \s \b are ASCII, and $ is the very end (no final newline)
        ({"arg": "word", "regex": r"^\w+$"}, False),
        ({"arg": "word", "regex": r"^\pL+$"}, True),
        ({"arg": "line", "regex": r"x$"}, False),
        ({"arg": "line", "regex": r"x\n?$"}, True),
        ({"arg": "line", "regex": r"(?m)x$"}, True),
        # glob: the whole string, * crosses /
        ({"arg": "path", "glob": "src/*.py"}, True),
        ({"arg": "path", "glob": "*.js"}, False),
        ({"arg": "path", "glob": "pkg/*"}, False),
        ({"arg": "n", "glob": "*"}, False),
        # numbers; booleans and strings are not numbers
        ({"arg": "n", "gt": 4}, True),
        ({"arg": "n", "gt": 5}, False),
        ({"arg": "n", "ge": 5}, True),
        ({"arg": "n", "ge": 5.1}, False),
        ({"arg": "x", "lt": 2.6}, True),
        ({"arg": "n", "lt": 5}, False),
        ({"arg": "n", "le": 5}, True),
        ({"arg": "n", "le": 4.99}, False),
        ({"arg": "flag", "gt": 0}, False),
        ({"arg": "mode", "lt": 10}, False),
        # lengths of strings, lists and mappings
        ({"arg": "code", "min_length": 18}, True),
        ({"arg": "code", "min_length": 19}, False),
        ({"arg": "code", "max_length": 10}, False),
        ({"arg": "items", "max_length": 3}, True),
        ({"arg": "opts", "min_length": 3}, True),
        ({"arg": "empty", "max_length": 0}, True),
        ({"arg": "n", "max_length": 100}, False),
        # paths into mappings and lists
        ({"arg": "opts.level", "equals": "high"}, True),
        ({"arg": "opts.list.1", "equals": "b"}, True),
        ({"arg": "opts.list.5", "equals": "b"}, False),
        ({"arg": "opts.list.x", "equals": "b"}, False),
        ({"arg": "mode.inner", "equals": "f"}, False),
        # a missing argument is never a match, whatever the operator...
        ({"arg": "missing", "equals": None}, False),
        ({"arg": "missing", "max_length": 5}, False),
        ({"arg": "missing", "regex": ".*"}, False),
        # ...so its negation is a match
        ({"not": {"arg": "missing", "equals": 1}}, True),
        # combinators
        ({"all": [{"arg": "mode", "equals": "fast"}, {"arg": "n", "gt": 1}]}, True),
        ({"all": [{"arg": "mode", "equals": "fast"}, {"arg": "n", "gt": 9}]}, False),
        ({"any": [{"arg": "mode", "equals": "x"}, {"arg": "n", "gt": 1}]}, True),
        ({"any": [{"arg": "mode", "equals": "x"}, {"arg": "n", "gt": 9}]}, False),
        ({"not": {"any": [{"arg": "mode", "equals": "x"}]}}, True),
        ({"not": {"all": [{"arg": "mode", "equals": "fast"}]}}, False),
        (
            {"all": [{"any": [{"arg": "n", "lt": 0}, {"not": {"arg": "flag", "equals": False}}]}]},
            True,
        ),
    ],
)
def test_condition_table(when: Any, expected: bool) -> None:
    assert matches(when) is expected


def test_conditions_can_be_built_in_code() -> None:
    rule = Rule(
        name="r",
        tools=["t"],
        decision=Effect.DENY,
        # pydantic's signature names the field by its alias ("not") only: it does not
        # model populate_by_name, which accepts ``not_`` too (what this test builds with).
        when=AllOf(all=[Leaf(arg="n", gt=1), NotOf(not_=Leaf(arg="mode", equals="slow"))]),  # type: ignore[call-arg]
    )
    assert rule.match.matches("t", ARGS, None)
    assert not rule.match.matches("t", {**ARGS, "mode": "slow"}, None)
    assert rule.match.matches("t", {"n": 2}, None), "missing mode: the leaf is false, not is true"


GLOBS = ["*", "**", "*rm -rf*", "**rm*", "/etc/*", "*.pem", "exact", "a*b", "*a*b*", "[ab]*",
         "?x*", "*\\*", "*.*", "x]*", "*\n*", ""]  # fmt: skip
VALUES = ["", "rm -rf /", "x rm -rf /tmp", "/etc/passwd", "/etc", "key.pem", "key.pem\n",
          "exact", "Exact", "ab", "a-b", "ba", "\\", "x\\", "x]y", "a\nb", "rm", "*"]  # fmt: skip


@pytest.mark.parametrize("glob", [glob for glob in GLOBS if glob])
def test_globs_answer_as_fnmatch_does(glob: str) -> None:
    # Globs with stars only at their ends are plain string tests; every glob
    # must still answer exactly as fnmatch's case-sensitive match does.
    import fnmatch

    for value in VALUES:
        expected = fnmatch.fnmatchcase(value, glob)
        assert Leaf(arg="v", glob=glob).matches({"v": value}) is expected, (glob, value)
    assert not Leaf(arg="v", glob=glob).matches({"v": 1}), "a glob never matches a number"

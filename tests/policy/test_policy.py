"""Policy files, rule matching, first-match order, default deny, line-numbered errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.policy import Decision, evaluate, load_policy, parse_policy, policy_json_schema

ROOT = Path(__file__).resolve().parents[2]


def policy_with(when: Any) -> str:
    return json.dumps(
        {"version": 1, "rules": [{"name": "r", "tools": "t.*", "when": when, "decision": "allow"}]}
    )


ARGS = {
    "code": "import os\nprint(1)",
    "mode": "fast",
    "n": 5,
    "flag": True,
    "path": "src/main.py",
    "items": [1, 2, 3],
    "opts": {"level": "high", "list": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"arg": "mode", "equals": "fast"}, True),
        ({"arg": "mode", "equals": "slow"}, False),
        ({"arg": "mode", "one_of": ["slow", "fast"]}, True),
        ({"arg": "mode", "one_of": ["slow"]}, False),
        ({"arg": "code", "regex": r"import\s+os"}, True),
        ({"arg": "code", "regex": r"^print"}, False),
        ({"arg": "n", "regex": "5"}, False),  # not a string
        ({"arg": "path", "glob": "src/*.py"}, True),
        ({"arg": "path", "glob": "*.js"}, False),
        ({"arg": "n", "gt": 4}, True),
        ({"arg": "n", "gt": 5}, False),
        ({"arg": "n", "ge": 5}, True),
        ({"arg": "n", "lt": 5}, False),
        ({"arg": "n", "le": 5}, True),
        ({"arg": "flag", "gt": 0}, False),  # booleans are not numbers
        ({"arg": "mode", "lt": 10}, False),
        ({"arg": "code", "min_length": 10}, True),
        ({"arg": "code", "max_length": 10}, False),
        ({"arg": "items", "max_length": 3}, True),
        ({"arg": "opts.level", "equals": "high"}, True),
        ({"arg": "opts.list.1", "equals": "b"}, True),
        ({"arg": "opts.list.5", "equals": "b"}, False),
        ({"arg": "missing", "equals": None}, False),  # a missing argument is never a match
        ({"not": {"arg": "missing", "equals": 1}}, True),
        ({"all": [{"arg": "mode", "equals": "fast"}, {"arg": "n", "gt": 1}]}, True),
        ({"all": [{"arg": "mode", "equals": "fast"}, {"arg": "n", "gt": 9}]}, False),
        ({"any": [{"arg": "mode", "equals": "x"}, {"arg": "n", "gt": 1}]}, True),
        ({"any": [{"arg": "mode", "equals": "x"}, {"arg": "n", "gt": 9}]}, False),
        ({"not": {"any": [{"arg": "mode", "equals": "x"}]}}, True),
    ],
)
def test_conditions(when: Any, expected: bool) -> None:
    policy = parse_policy(policy_with(when))
    verdict = evaluate(policy, "t.run", ARGS)
    assert (verdict.decision is Decision.ALLOW) is expected


def test_first_match_wins_and_default_denies() -> None:
    policy = parse_policy(
        """
version: 1
rules:
  - {name: deny-rm, tools: shell.run, when: {arg: command, regex: 'rm -rf'}, decision: deny, reason: not that}
  - {name: shell, tools: shell.run, decision: allow, timeout_s: 5, sandbox_profile: small}
  - {name: never-reached, tools: shell.run, decision: deny}
  - {name: admins, tools: "*", principals: ["admin-*"], decision: allow}
"""
    )
    denied = evaluate(policy, "shell.run", {"command": "rm -rf /"})
    assert (denied.decision, denied.rule, denied.reason) == (Decision.DENY, "deny-rm", "not that")
    allowed = evaluate(policy, "shell.run", {"command": "ls"})
    assert (allowed.rule, allowed.timeout_s, allowed.sandbox_profile) == ("shell", 5, "small")
    nobody = evaluate(policy, "http.fetch", {"url": "x"})
    assert nobody.decision is Decision.DENY and nobody.rule is None
    assert "no rule matches" in nobody.reason
    admin = evaluate(policy, "http.fetch", {}, principal="admin-ada")
    assert admin.decision is Decision.ALLOW and admin.rule == "admins"
    assert evaluate(policy, "http.fetch", {}, principal="ada").rule is None


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("version: 1\nrules:\n  - name: a\n    tools: x\n    decison: allow\n", 5, "decison"),
        (
            "version: 1\nrules:\n  - name: a\n    tools: x\n    decision: alow\n",
            5,
            "rules[0].decision",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    tools: x\n    decision: allow\n"
            "    when:\n      arg: code\n      regx: os\n",
            8,
            "regx",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    tools: x\n    decision: allow\n"
            "    when: {arg: code, regex: '(unclosed'}\n",
            6,
            "invalid regex",
        ),
        ("version: 1\ndefault: deny\ndefault: allow\n", 3, "duplicate key 'default'"),
        ("version: 2\n", 1, "version"),
        ("version: 1\nrate_limits:\n  - {name: a, tools: x, scope: team, rate: 1}\n", 3, "scope"),
        ("version: 1\nrules: [\n", None, "not valid YAML"),
    ],
)
def test_mistakes_name_the_line_and_field(text: str, line: int | None, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, source="p.yaml")
    assert caught.value.file == "p.yaml"
    if line is not None:
        assert caught.value.line == line, str(caught.value)
    assert needle in str(caught.value)


def test_leaf_needs_exactly_one_operator() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_policy(policy_with({"arg": "x", "equals": 1, "regex": "a"}))
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_policy(policy_with({"arg": "x"}))


def test_shipped_policies_load_and_behave() -> None:
    default = load_policy(ROOT / "policies" / "default.yaml")
    assert evaluate(default, "files.read", {"path": "a"}).decision is Decision.ALLOW
    rm = evaluate(default, "shell.run", {"command": "rm -rf build"})
    assert rm.decision is Decision.REQUIRE_APPROVAL
    assert evaluate(default, "unknown.tool", {}).decision is Decision.DENY
    strict = load_policy(ROOT / "policies" / "strict.yaml")
    assert evaluate(strict, "python.run", {"code": "1"}).decision is Decision.REQUIRE_APPROVAL
    dev = load_policy(ROOT / "policies" / "dev.yaml")
    assert evaluate(dev, "http.fetch", {"url": "x"}).decision is Decision.ALLOW


def test_committed_schema_matches_the_code() -> None:
    committed = json.loads((ROOT / "policies" / "policy.schema.json").read_text())
    assert committed == policy_json_schema(), (
        "regenerate: stockade policy schema > policies/policy.schema.json"
    )


def test_policy_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "policy", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    shipped = sorted(str(path) for path in (ROOT / "policies").glob("*.yaml"))
    ok = stockade("check", *shipped)
    assert ok.returncode == 0 and ok.stdout.count(": ok (") == 3
    typo = tmp_path / "typo.yaml"
    typo.write_text("version: 1\nrules:\n  - name: a\n    tools: x\n    decison: allow\n")
    bad = stockade("check", str(typo))
    assert bad.returncode == 2
    assert f"{typo}:5: rules[0].decison" in bad.stderr
    schema = stockade("schema")
    assert json.loads(schema.stdout)["title"] == "Stockade policy"

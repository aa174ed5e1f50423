"""Policy files: every mistake names the file, the line and the field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.policy import Effect, load_policy, parse_policy
from orchestrator.yamlfile import MAX_DEPTH, MAX_DOCUMENT_BYTES

RULE = "version: 1\nrules:\n  - name: a\n    tools: x\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "needle"),
    [
        # typo'd keys, at every level, point at the typo's own line
        (RULE + "    decison: allow\n", 5, "rules[0].decison", "did you mean 'decision'?"),
        ("version: 1\ndefualt: deny\n", 2, "defualt", "did you mean 'default'?"),
        (
            RULE + "    decision: allow\n    when:\n      arg: code\n      regx: os\n",
            8,
            "rules[0].when.regx",
            "unknown field 'regx' (did you mean 'regex'?); expected one of arg, equals",
        ),
        (
            RULE + "    decision: allow\n    when:\n      all:\n        - arg: a\n"
            "          equals: 1\n        - not:\n            arg: b\n            lt: 2\n"
            "            gte: 3\n",
            13,
            "rules[0].when.all[1].not.gte",
            "unknown field 'gte'",
        ),
        (
            RULE + "    decision: allow\n    retry:\n      max_atempts: 2\n",
            7,
            "rules[0].retry.max_atempts",
            "did you mean 'max_attempts'?",
        ),
        (
            "version: 1\nmodel_limits:\n  max_tokens: 5\n",
            3,
            "model_limits.max_tokens",
            "did you mean 'max_tokens_per_run'?",
        ),
        # wrong values
        (
            RULE + "    decision: alow\n",
            5,
            "rules[0].decision",
            "expected one of allow, deny, require_approval, got 'alow'",
        ),
        ("version: 2\n", 1, "version", "expected one of 1, got 2"),
        (
            "version: 1\nrate_limits:\n  - {name: a, tools: x, scope: team, rate: 1}\n",
            3,
            "rate_limits[0].scope",
            "expected one of run, principal, global, got 'team'",
        ),
        (
            RULE + "    decision: allow\n    timeout_s: soon\n",
            6,
            "rules[0].timeout_s",
            "expected a number, got 'soon'",
        ),
        (RULE + "    decision: allow\n    timeout_s: 0\n", 6, "rules[0].timeout_s", "greater than"),
        ("version: 1\nrules: {}\n", 2, "rules", "expected a list"),
        ("version: 1\nrules:\n  - {name: a, decision: deny}\n", 3, "rules[0].tools", "missing"),
        # invalid regular expressions, found at load time
        (
            RULE + "    decision: allow\n    when:\n      any:\n        - {arg: c, regex: '(x'}\n",
            8,
            "rules[0].when.any[0].regex",
            "invalid regular expression '(x'",
        ),
        ("version: 1\nredact:\n  - ok\n  - '[a-'\n", 4, "redact[1]", "invalid regular expression"),
        # leaves need exactly one operator
        (
            RULE + "    decision: allow\n    when: {arg: x}\n",
            6,
            "rules[0].when",
            "exactly one operator",
        ),
        (
            RULE + "    decision: allow\n    when: {arg: x, equals: 1, regex: a}\n",
            6,
            "rules[0].when",
            "got equals, regex",
        ),
        # names are unique; approval timeouts only on approval rules
        (
            "version: 1\nrules:\n  - {name: a, tools: x, decision: allow}\n"
            "  - {name: a, tools: y, decision: deny}\n",
            4,
            "rules[1].name",
            "duplicate name 'a' (first used by rules[0])",
        ),
        (
            RULE + "    decision: allow\n    approval_timeout_s: 30\n",
            6,
            "rules[0].approval_timeout_s",
            "only a require_approval rule",
        ),
        # YAML itself
        ("version: 1\ndefault: deny\ndefault: allow\n", 3, None, "duplicate key 'default'"),
        (
            RULE + "    decision: allow\n    when: {arg: a, arg: b}\n",
            6,
            None,
            "duplicate key 'arg'",
        ),
        ("version: 1\nrules: [\n", 3, None, "not valid YAML"),
        ("", 1, None, "empty"),
        ("- version: 1\n", 1, None, "expected a mapping"),
    ],
)
def test_mistakes_name_the_line_and_field(
    text: str, line: int, field: str | None, needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, source="policies/x.yaml")
    error = caught.value
    assert (error.file, error.line, error.field) == ("policies/x.yaml", line, field), str(error)
    assert needle in str(error)
    assert str(error).startswith(f"policies/x.yaml:{line}: ")


def test_message_has_the_documented_shape() -> None:
    text = "version: 1\nrules:\n" + "".join(
        f"  - name: r{i}\n    tools: x\n    decision: {'alow' if i == 3 else 'deny'}\n"
        for i in range(4)
    )
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, source="policies/x.yaml")
    assert str(caught.value) == (
        "policies/x.yaml:14: rules[3].decision: expected one of allow, deny, "
        "require_approval, got 'alow'"
    )


def test_a_typo_is_not_also_reported_as_a_missing_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(RULE + "    decison: allow\n")
    assert "missing" not in str(caught.value)


def test_further_problems_are_listed_too() -> None:
    text = RULE + "    decision: alow\n  - name: b\n    tools: y\n    decision: deny\n    bad: 1\n"
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, source="p.yaml")
    assert caught.value.line == 9, "unknown keys first: they name the mistake"
    assert "also p.yaml:5: rules[0].decision" in str(caught.value)


def test_load_policy_reads_files_and_reports_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault: allow\nrules:\n  - {name: a, tools: x, decision: deny}\n")
    policy = load_policy(path)
    assert policy.default == "allow" and policy.rules[0].decision is Effect.DENY
    with pytest.raises(ConfigError, match="cannot read policy") as caught:
        load_policy(tmp_path / "absent.yaml")
    assert caught.value.file == str(tmp_path / "absent.yaml")


def test_loaded_policy_is_frozen() -> None:
    policy = parse_policy("version: 1\n")
    with pytest.raises(ValueError, match="frozen"):
        policy.default = "allow"


def test_yaml_anchors_and_aliases_are_refused_with_their_line() -> None:
    with pytest.raises(ConfigError, match="anchor &r is not allowed") as caught:
        parse_policy(
            "version: 1\nrules:\n  - &r {name: a, tools: x, decision: allow}\n  - {<<: *r}\n"
        )
    assert caught.value.line == 3
    with pytest.raises(ConfigError, match="anchor"):
        parse_policy("version: 1\nrules: &loop [*loop]\n")


def test_a_billion_laughs_is_refused_at_once() -> None:
    # Nine levels of nine aliases each: expanded, 9**9 strings and gigabytes.
    lines = ["version: 1", 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines.append("rules: *a9")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="anchors and aliases are refused") as caught:
        parse_policy("\n".join(lines) + "\n", source="bomb.yaml")
    assert time.perf_counter() - started < 1.0
    assert caught.value.file == "bomb.yaml"
    assert caught.value.line == 2


def test_an_oversized_document_is_refused_with_a_line(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    rule = "  - {name: r%d, tools: x, decision: allow}\n"
    big.write_text("version: 1\nrules:\n" + "".join(rule % i for i in range(40_000)))
    assert big.stat().st_size > MAX_DOCUMENT_BYTES
    with pytest.raises(ConfigError, match="larger than") as caught:
        load_policy(big)
    assert caught.value.file == str(big)
    assert caught.value.line is not None and 2 < caught.value.line < 40_002


@pytest.mark.parametrize(
    ("document", "line", "problem"),
    [
        ("version: 1\n? [a]\n: b\n", 2, "found unhashable key"),
        ("version: 1\nwhen: 2024-13-45\n", 2, "cannot read this value: month must be in 1..12"),
        ("version: 1\n\nx: !!float abc\n", 3, "could not convert string to float: 'abc'"),
        ("version: 1\nx: !!int abc\n", 2, "invalid literal for int()"),
        ("version: 1\nx: !!python/object:os.system {}\n", 2, "could not determine a constructor"),
    ],
)
def test_a_value_its_tag_cannot_make_is_an_error_with_its_line(
    document: str, line: int, problem: str
) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        parse_policy(document, source="p.yaml")
    assert (caught.value.file, caught.value.line) == ("p.yaml", line)
    assert problem in caught.value.message


@pytest.mark.parametrize("flow", [True, False])
def test_nesting_deeper_than_the_limit_is_refused_with_its_line(flow: bool) -> None:
    deep = MAX_DEPTH + 1
    if flow:  # a megabyte of brackets would otherwise exhaust the parser's recursion
        nested = "[" * 50_000 + "]" * 50_000
        document = f"version: 1\nrules: []\nx: {nested}\n"
    else:
        document = "version: 1\nrules: []\nx:\n" + "".join(
            f"{'  ' * level}- \n" if level < deep else f"{'  ' * level}- 1\n"
            for level in range(1, deep + 1)
        )
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep") as caught:
        parse_policy(document, source="p.yaml")
    assert caught.value.file == "p.yaml" and caught.value.line is not None
    assert caught.value.line >= 3
    shallow = "version: 1\nrules: []\nx: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    with pytest.raises(ConfigError, match="unknown field 'x'"):
        parse_policy(shallow)


def test_a_document_over_the_limit_in_bytes_but_not_in_characters_is_refused(
    tmp_path: Path,
) -> None:
    """Half a million "é" are a megabyte: what lies past it (a rule denying everything) was
    dropped without a word, and the policy loaded as allowing every call."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\ndefault: allow\n#" + "é" * 600_000 + "\n"
        "rules:\n  - {name: deny-all, tools: '*', decision: deny}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="larger than") as caught:
        load_policy(policy)
    assert (caught.value.file, caught.value.line) == (str(policy), 3)


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_bytes(b"version: 1\nrules: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text \\(byte 0xe9 at offset 26") as caught:
        load_policy(policy)
    assert (caught.value.file, caught.value.line) == (str(policy), 3)

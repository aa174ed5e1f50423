"""The shipped policy files, the committed JSON Schema, and ``stockade policy``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from orchestrator.audit import REDACTED, redact
from orchestrator.policy import Effect, Policy, evaluate, load_policy, render_policy_schema
from orchestrator.policy._re2 import LinearRegex

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
BUILT_IN = [
    "python.run",
    "shell.run",
    "files.read",
    "files.write",
    "files.append",
    "files.list",
    "files.search",
    "files.delete",
    "http.fetch",
]


@pytest.mark.parametrize("name", ["default", "strict", "dev"])
def test_shipped_policies_load_and_name_every_built_in_tool(name: str) -> None:
    policy = load_policy(POLICIES / f"{name}.yaml")
    assert policy.default == "deny"
    for tool in BUILT_IN:
        assert evaluate(policy, tool, {}, principal="ada").rule is not None, tool
    assert evaluate(policy, "unknown.tool", {}).decision is Effect.DENY


@pytest.mark.parametrize(
    ("name", "tool", "arguments", "expected"),
    [
        ("default", "files.read", {"path": "a"}, Effect.ALLOW),
        ("default", "files.delete", {"path": "a"}, Effect.REQUIRE_APPROVAL),
        ("default", "files.write", {"path": "a", "content": "x" * 20_000_000}, Effect.DENY),
        ("default", "python.run", {"code": "print(1)"}, Effect.ALLOW),
        ("default", "shell.run", {"command": "ls -la"}, Effect.ALLOW),
        ("default", "shell.run", {"command": "rm -rf build"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "cd x && rm -f a.txt"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "/bin/rm -r -f /tmp/x"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm\t-rf\nx"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm a.txt"}, Effect.ALLOW),
        ("default", "shell.run", {"command": "rm -" + "r" * 40_000}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm -v -rf build"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm -R build"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm --recursive --force x"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "rm ./file-rf.txt"}, Effect.ALLOW),
        ("default", "shell.run", {"command": "rm a; ls -rf"}, Effect.ALLOW),
        ("default", "shell.run", {"command": "dd if=/dev/zero of=x"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "dd bs=1M of=/dev/sdb"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "echo add if=x"}, Effect.ALLOW),
        (
            "default",
            "shell.run",
            {"command": "dd if=disk.img of=/dev/sdb"},
            Effect.REQUIRE_APPROVAL,
        ),
        ("default", "shell.run", {"command": "mkfs.ext4 /dev/sdb"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "truncate -s 0 log"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": ":(){ :|:& };:"}, Effect.REQUIRE_APPROVAL),
        ("default", "shell.run", {"command": "shredder --help"}, Effect.ALLOW),
        ("default", "http.fetch", {"url": "https://x"}, Effect.ALLOW),
        ("default", "http.fetch", {"url": "https://x", "method": "HEAD"}, Effect.ALLOW),
        ("default", "http.fetch", {"url": "https://x", "method": "POST"}, Effect.REQUIRE_APPROVAL),
        ("strict", "files.list", {}, Effect.ALLOW),
        ("strict", "python.run", {"code": "1"}, Effect.REQUIRE_APPROVAL),
        ("strict", "shell.run", {"command": "curl https://x"}, Effect.DENY),
        ("strict", "shell.run", {"command": "echo x | sudo tee y"}, Effect.DENY),
        ("strict", "shell.run", {"command": "curly braces"}, Effect.REQUIRE_APPROVAL),
        ("strict", "http.fetch", {"url": "http://x"}, Effect.DENY),
        ("strict", "http.fetch", {"url": "https://x"}, Effect.REQUIRE_APPROVAL),
        ("dev", "shell.run", {"command": "rm -rf build"}, Effect.ALLOW),
        ("dev", "http.fetch", {"url": "http://x"}, Effect.ALLOW),
    ],
)
def test_shipped_policies_decide_as_documented(
    name: str, tool: str, arguments: dict[str, object], expected: Effect
) -> None:
    assert evaluate(load_policy(POLICIES / f"{name}.yaml"), tool, arguments).decision is expected


def test_default_redaction_hides_common_secrets() -> None:
    from orchestrator.audit import redact

    patterns = load_policy(POLICIES / "default.yaml").redact_patterns
    redacted = redact(
        {
            "headers": {"Authorization": "Bearer abc.def", "Accept": "text/html"},
            "code": "OPENAI_API_KEY=sk-" + "a" * 40 + "\nprint(1)",
            "password": "hunter2",
        },
        patterns,
    )
    text = json.dumps(redacted)
    assert "abc.def" not in text and "aaaa" not in text and "hunter2" not in text
    assert redacted["headers"]["Accept"] == "text/html" and "print(1)" in redacted["code"]


SHIPPED = [load_policy(POLICIES / f"{name}.yaml") for name in ("default", "strict", "dev")]


def condition_patterns(condition: Any) -> list[str]:
    if condition is None:
        return []
    if getattr(condition, "regex", None) is not None:
        return [condition.regex]
    children = getattr(condition, "all", None) or getattr(condition, "any", None) or []
    inner = getattr(condition, "not_", None)
    return [p for child in [*children, inner] for p in condition_patterns(child)]


def shipped_patterns(policy: Policy) -> list[str]:
    return [p for rule in policy.rules for p in condition_patterns(rule.when)]


CONDITION_PATTERNS = sorted({p for policy in SHIPPED for p in shipped_patterns(policy)})
REDACT_LISTS = [policy.redact for policy in SHIPPED]
# Pieces the shipped patterns look for, so that random texts often come close.
PIECES = [
    "rm", "-rf", "-r", "-f", "dd", "if=", "mkfs", "shred", "truncate", "-s", "0", ":(){", "curl",
    "wget", "nc", "ssh", "sudo", "su", "https://", "/", ";", "&&", "|",
    "password", "Token", "API_KEY", "secret", "authorization", "Bearer", "=", ":", "sk-", "ghp_",
    "AKIA", "A" * 16, "a" * 20, "Z9" * 10, "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----", " ", "  ", "\t", "\n", "\r", "\f", "x", "_", ".", "~",
]  # fmt: skip
# RE2 and Python differ outside these: \s also means \v and Unicode spaces to Python
# (no shell splits words there), \b and \w see Unicode letters, and $ matches before
# a final newline in Python (only the key pattern uses $; keys do not end in one).
TEXTS = st.lists(
    st.one_of(st.sampled_from(PIECES), st.characters(min_codepoint=32, max_codepoint=126)),
    max_size=25,
).map("".join)
KEYS = ["password", "Token", "api-key", "API_KEY", "Cookie", "passwd", "tokens", "secret_key"]
SECRETS = st.lists(
    st.one_of(
        st.sampled_from(KEYS),
        st.builds("{}{}{}".format, st.sampled_from(KEYS), st.sampled_from(["=", " : ", ":"]),
                  st.text("ab1/+= ", max_size=8)),
        st.builds("Bearer {}".format, st.text("aZ9._~+/-= ", max_size=10)),
        st.builds("sk-{}".format, st.text("aZ9_-", min_size=15, max_size=25)),
        st.builds("ghp_{}".format, st.text("aZ9", min_size=30, max_size=40)),
        st.builds("AKIA{}".format, st.text("AZ09", min_size=14, max_size=18)),
        st.builds("-----BEGIN RSA PRIVATE KEY-----{}-----END RSA PRIVATE KEY-----".format,
                  st.text("ab\n -", max_size=10)),
        TEXTS,
    ),
    max_size=4,
).map("".join)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_re2_decides_the_shipped_patterns_as_python_did(text: str) -> None:
    assume(not text.endswith("\n"))
    for pattern in CONDITION_PATTERNS:
        assert LinearRegex(pattern).search(text) == bool(re.search(pattern, text)), pattern


@settings(max_examples=400, deadline=None)
@given(SECRETS)
def test_re2_redacts_as_python_did(text: str) -> None:
    assume(not text.endswith("\n"))
    for patterns in REDACT_LISTS:
        expected = text
        for pattern in patterns:
            expected = re.sub(pattern, REDACTED, expected)
        assert redact(text, patterns) == expected
        key_hidden = any(re.search(pattern, text) for pattern in patterns)
        assert (redact({text: "v"}, patterns)[text] == REDACTED) is key_hidden


def test_committed_schema_is_the_generated_one() -> None:
    committed = (POLICIES / "policy.schema.json").read_text()
    assert committed == render_policy_schema(), (
        "regenerate: python -m orchestrator.policy > policies/policy.schema.json"
    )


def test_schema_describes_every_field() -> None:
    schema = json.loads(render_policy_schema())
    for name, definition in [("Policy", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
        if "properties" in definition:
            assert definition["additionalProperties"] is False, name


def stockade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "policy", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_policy_cli(tmp_path: Path) -> None:
    ok = stockade("check", *sorted(str(path) for path in POLICIES.glob("*.yaml")))
    assert ok.returncode == 0 and ok.stdout.count(": ok (") == 3, ok.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("version: 1\nrules:\n  - name: a\n    tools: x\n    decison: allow\n")
    bad = stockade("check", str(typo))
    assert bad.returncode != 0
    assert f"{typo}:5: rules[0].decison: unknown field 'decison'" in bad.stderr
    assert stockade("schema").stdout == render_policy_schema()

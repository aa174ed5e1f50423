"""The shipped policy files, the committed JSON Schema, and ``stockade policy``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.policy import Effect, evaluate, load_policy, render_policy_schema

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
        ("default", "http.fetch", {"url": "https://x"}, Effect.ALLOW),
        ("default", "http.fetch", {"url": "https://x", "method": "HEAD"}, Effect.ALLOW),
        ("default", "http.fetch", {"url": "https://x", "method": "POST"}, Effect.REQUIRE_APPROVAL),
        ("strict", "files.list", {}, Effect.ALLOW),
        ("strict", "python.run", {"code": "1"}, Effect.REQUIRE_APPROVAL),
        ("strict", "shell.run", {"command": "curl https://x"}, Effect.DENY),
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

"""``stockade policy test``: policies tested like code, and tests made from an audit log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from orchestrator.approvals import ApprovalStore
from orchestrator.audit import AuditLog, encode_record
from orchestrator.audit.regression import SkippedCall, policy_tests_from_log, render_tests
from orchestrator.cli import cli
from orchestrator.config import builtin_profiles
from orchestrator.errors import ConfigError
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.policy import (
    load_policy,
    load_policy_tests,
    parse_policy,
    render_policy_tests_schema,
    run_policy_tests,
)
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

POLICY = """\
version: 1
default: deny
rules:
  - name: no-shell-network
    tools: shell.run
    when: {arg: command, regex: '\\bcurl\\b'}
    decision: deny
  - name: shell
    tools: shell.run
    decision: allow
    timeout_s: 10
  - name: fetch
    tools: http.fetch
    decision: require_approval
    sandbox_profile: http
  - name: never-reached
    tools: files.delete
    decision: deny
rate_limits:
  - {name: shell-per-run, tools: shell.run, scope: run, rate: 1, per_s: 60, burst: 3}
redact: ['sk-[A-Za-z0-9]{10,}']
"""

TESTS = """\
version: 1
cases:
  - name: curl is denied
    call: {tool: shell.run, arguments: {command: "curl x"}}
    expect: {decision: deny, rule: no-shell-network}
  - name: ls is allowed
    call: {tool: shell.run, arguments: {command: ls}, run: r}
    expect: {decision: allow, rule: shell, timeout_s: 10, profile: null}
  - name: fetches need approval in the http profile
    call: {tool: http.fetch, arguments: {url: "https://x"}}
    expect: {decision: require_approval, profile: http}
  - name: unknown tools fall to the default
    call: {tool: mail.send}
    expect: {decision: deny, rule: null}
  - name: three shell calls per run
    call: {tool: shell.run, arguments: {command: ls}, run: r}
    expect: {rate_limited_after: 3, limit: shell-per-run}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    policy, tests = tmp_path / "policy.yaml", tmp_path / "tests.yaml"
    policy.write_text(POLICY)
    tests.write_text(TESTS)
    return policy, tests


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and standard output of ``stockade policy ARGS``."""
    result = CliRunner().invoke(cli, ["policy", *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("name", ["default", "strict", "dev"])
def test_shipped_policies_pass_their_tests_and_every_rule_is_reached(name: str) -> None:
    policy_file = POLICIES / f"{name}.yaml"
    report = run_policy_tests(
        load_policy(policy_file),
        policy_file,
        [load_policy_tests(POLICIES / "tests" / f"{name}.yaml")],
    )
    assert report.ok, [(o.name, o.problems) for o in report.failed]
    assert report.unreached_rules == [] and report.default_reached


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = (POLICIES / "policy-tests.schema.json").read_text()
    assert committed == render_policy_tests_schema(), (
        "regenerate: stockade policy schema --tests > policies/policy-tests.schema.json"
    )
    schema = json.loads(committed)
    for name, definition in [("PolicyTestFile", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
        if "properties" in definition:
            assert definition["additionalProperties"] is False, name


def test_passing_cases_pass(files: tuple[Path, Path]) -> None:
    code, output = invoke("test", *map(str, files), "--coverage")
    assert code == 0, output
    assert "5 passed, 0 failed" in output
    assert "rules no case reached (1):\n  never-reached" in output


def test_a_failure_names_the_rule_that_matched_instead(files: tuple[Path, Path]) -> None:
    policy, tests = files
    tests.write_text(
        TESTS
        + "  - name: curl piped is allowed\n"
        + "    call: {tool: shell.run, arguments: {command: 'curl x | sh'}}\n"
        + "    expect: {decision: allow}\n"
        + "  - name: wrong deadline\n"
        + "    call: {tool: shell.run, arguments: {command: ls}}\n"
        + "    expect: {rule: shell, timeout_s: 5}\n"
    )
    code, output = invoke("test", str(policy), str(tests))
    assert code == 1
    assert f"FAIL {tests}:18: curl piped is allowed" in output
    assert f"expected allow, got deny by rule 'no-shell-network' ({policy}:4)" in output
    assert f"FAIL {tests}:21: wrong deadline" in output
    assert "expected timeout_s 5.0, got 10.0" in output
    assert "5 passed, 2 failed (7 cases)" in output


def test_a_case_naming_a_rule_that_no_longer_exists_fails(files: tuple[Path, Path]) -> None:
    policy, tests = files
    policy.write_text(POLICY.replace("name: no-shell-network", "name: shell-network-denied"))
    code, output = invoke("test", str(policy), str(tests))
    assert code == 1
    assert (
        "expected rule 'no-shell-network', which is not in the policy (renamed or removed?)"
        in output
    )
    assert "the call was decided deny by rule 'shell-network-denied'" in output


def test_rate_limit_expectations(files: tuple[Path, Path]) -> None:
    policy, tests = files
    policy.write_text(POLICY.replace("burst: 3", "burst: 2"))
    code, output = invoke("test", str(policy), str(tests))
    assert code == 1
    assert (
        "expected 3 calls allowed before a refusal, got 2 (refused by limit 'shell-per-run')"
        in output
    )
    policy.write_text(POLICY.replace("burst: 3", "burst: 4"))
    code, output = invoke("test", str(policy), str(tests))
    assert "expected a rate limit to refuse call 4, but all 4 were allowed" in output
    policy.write_text(POLICY.replace("decision: allow\n    timeout_s: 10", "decision: deny"))
    code, output = invoke("test", str(policy), str(tests))
    assert "so it never reaches the rate limits" in output
    tests.write_text(TESTS.replace("limit: shell-per-run", "limit: shell-per-principal"))
    policy.write_text(POLICY)
    code, output = invoke("test", str(policy), str(tests))
    assert "expected rate limit 'shell-per-principal', which is not in the policy" in output


def test_json_for_ci(files: tuple[Path, Path]) -> None:
    policy, tests = files
    tests.write_text(
        TESTS.replace(
            "expect: {decision: deny, rule: no-shell-network}", "expect: {decision: allow}"
        )
    )
    code, output = invoke("test", str(policy), str(tests), "--json", "--coverage")
    assert code == 1
    document = json.loads(output)
    assert (document["ok"], document["passed"], document["failed"]) == (False, 4, 1)
    (failed,) = [case for case in document["cases"] if not case["ok"]]
    assert failed["name"] == "curl is denied" and failed["line"] == 3
    assert failed["got"] == {
        "decision": "deny",
        "rule": "no-shell-network",
        "rule_line": 4,
        "allowed_calls": None,
        "refused_by": None,
    }
    assert document["coverage"] == {"unreached_rules": ["never-reached"], "default_reached": True}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x}\n    expect: {decison: allow}\n",
         ":5: cases[0].expect.decison: unknown field 'decison' (did you mean 'decision'?)"),
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x}\n    expect: {decision: alow}\n",
         ":5: cases[0].expect.decision: expected one of allow, deny, require_approval, got 'alow'"),
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x}\n    expect: {}\n",
         ":5: cases[0].expect: expect at least one of decision"),
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x}\n    expect: {limit: l}\n",
         ":5: cases[0].expect.limit: limit needs rate_limited_after"),
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x}\n    expect: {rule: r}\n"
         "  - name: a\n    call: {tool: y}\n    expect: {rule: r}\n",
         ":6: cases[1].name: duplicate case name 'a' (first used by cases[0])"),
        ("version: 1\ncases:\n  - name: a\n    call: {tool: x, args: {}}\n    expect: {rule: r}\n",
         ":4: cases[0].call.args: unknown field 'args'"),
        ("version: 1\ncases: []\n", ":2: cases: expected at least 1 item(s)"),
    ],
)  # fmt: skip
def test_malformed_test_files_name_file_line_and_field(
    tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policy_tests(path)
    assert str(raised.value).startswith(f"{path}{where}"), str(raised.value)
    result = CliRunner().invoke(cli, ["policy", "test", str(POLICIES / "default.yaml"), str(path)])
    assert isinstance(result.exception, ConfigError)  # the entry point exits 2 on these


def record_calls(tmp_path: Path, policy_text: str) -> Path:
    """Calls through a gateway under ``policy_text``; the audit log they left."""
    registry = ToolRegistry()
    for name in ("toolkits.shell", "toolkits.http", "toolkits.files"):
        registry.load(name)
    policy = parse_policy(policy_text)
    log = tmp_path / "audit.jsonl"
    gateway = Gateway(
        ToolExecutor(registry, ScriptedBackend(), profiles=builtin_profiles("runc").values()),
        policy,
        AuditLog(log, redact_patterns=policy.redact, max_value_bytes=64),
        approvals=ApprovalGate(ApprovalStore(tmp_path / "approvals.db")),
        metrics=Metrics(),
    )
    calls = [
        ("shell.run", {"command": "ls"}, "ada"),
        ("shell.run", {"command": "ls"}, "ada"),  # the same call twice: one case
        ("shell.run", {"command": "curl https://x"}, "bob"),
        ("shell.run", {"command": "echo sk-abcdefghijklmnop"}, "ada"),  # redacted
        ("shell.run", {"command": "echo " + "x" * 200}, "ada"),  # kept as a hash
        ("files.delete", {"path": "a"}, None),
        ("mail.send", {}, None),  # never reached the policy
    ]

    async def run() -> None:
        for number, (tool, arguments, principal) in enumerate(calls):
            call = ToolCall(
                id=f"c{number}", name=tool, arguments=arguments, run_id="r", principal=principal
            )
            await gateway.call(call)

    asyncio.run(run())
    return log


def test_tests_made_from_an_audit_log_pass_and_catch_a_loosened_policy(tmp_path: Path) -> None:
    log = record_calls(tmp_path, POLICY)
    document, skipped = policy_tests_from_log(log)
    cases = [
        (c["call"]["tool"], c["call"].get("principal"), c["expect"]) for c in document["cases"]
    ]
    assert cases == [
        ("shell.run", "ada", {"decision": "allow", "rule": "shell"}),
        ("shell.run", "bob", {"decision": "deny", "rule": "no-shell-network"}),
        ("files.delete", None, {"decision": "deny", "rule": "never-reached"}),
    ]
    assert [s.reason for s in skipped] == [
        "argument /arguments/command was redacted (it held a secret)",
        "argument /arguments/command is kept only as its SHA-256, size and head",
    ]

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    generated = tmp_path / "from-log.yaml"
    code, output = invoke("replay", "--as-tests", "--audit", str(log))
    assert code == 0, output
    generated.write_text(output)
    assert "#   skipped seq" in output and "was redacted (it held a secret)" in output
    assert load_policy_tests(generated).tests.cases  # loads as written

    code, output = invoke("test", str(policy), str(generated))
    assert code == 0, output
    assert "3 passed, 0 failed" in output

    loosened = tmp_path / "loosened.yaml"
    loosened.write_text(POLICY.replace("regex: '\\bcurl\\b'", "regex: '\\bnever\\b'"))
    code, output = invoke("test", str(loosened), str(generated))
    assert code == 1
    assert "expected deny, got allow by rule 'shell'" in output
    assert "2 passed, 1 failed" in output

    as_json = json.loads(invoke("replay", "--as-tests", "--json", "--audit", str(log))[1])
    assert as_json["tests"] == document and len(as_json["skipped"]) == 2
    assert yaml.safe_load(generated.read_text()) == document


def _edited_log(tmp_path: Path, edit: dict[str, Any]) -> Path:
    """A log of two decided calls whose second record was edited (and rehashed) by hand."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False, group_commit=False)
    common = {"event": "call", "tool": "shell.run", "decision": "allow", "rule": "shell"}
    try:
        for number in range(2):
            log.append({**common, "call_id": f"c{number}", "arguments": {"command": "ls"}})
    finally:
        log.close()
    first, second = path.read_bytes().splitlines()
    record = {**json.loads(second), **edit}
    del record["hash"]
    for key in [key for key, value in edit.items() if value is None]:
        del record[key]
    path.write_bytes(first + b"\n" + encode_record(record)[0] + b"\n")
    return path


def _replay(tmp_path: Path, log: Path, *, as_tests: bool) -> Result:
    """``stockade policy replay`` of ``log``, against an allow-all policy or as tests."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    args = ["--as-tests"] if as_tests else [str(policy)]
    return CliRunner().invoke(cli, ["policy", "replay", *args, "--audit", str(log)])


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"decision": "maybe"}, "decision 'maybe' is none of allow, deny, require_approval"),
        ({"tool": None}, "no tool name"),
        ({"arguments": ["ls"]}, "its arguments are not a mapping"),
        ({"bounded": 3}, "its bounded is not a list"),
        ({"event": "intent", "principal": 7}, "its rule, principal or run_id is not text"),
    ],
)
@pytest.mark.parametrize("as_tests", [True, False])
def test_replaying_an_edited_record_names_it_instead_of_failing(
    tmp_path: Path, edit: dict[str, Any], problem: str, as_tests: bool
) -> None:
    log = _edited_log(tmp_path, edit)
    result = _replay(tmp_path, log, as_tests=as_tests)
    assert isinstance(result.exception, ConfigError), result.exception
    assert result.exception.file == str(log)
    assert result.exception.message == (
        f"the record with seq 1 is not a call as Stockade writes it ({problem}): the log was "
        "edited; `stockade audit verify` names the line"
    )


def test_a_skipped_calls_comment_stays_one_line_whatever_the_log_says() -> None:
    """A rehashed log's tool name holding a line break (YAML also breaks at U+2028) wrote
    lines of its own into the generated test file."""
    skipped = [SkippedCall(seq=3, tool="x\ncases: []\u2028y", reason="r\rz")]
    text = render_tests({"version": 1, "cases": []}, skipped, "log\n.jsonl")
    comments = [line for line in text.split("\n") if line.startswith("#")]
    assert comments[-1] == "#   skipped seq 3 (x\\ncases: []\\u2028y): r\\rz"
    assert "from log\\n.jsonl:" in comments[1]
    assert yaml.safe_load(text) == {"version": 1, "cases": []}


@pytest.mark.parametrize("as_tests", [True, False])
def test_replaying_a_log_that_does_not_exist_is_an_error(tmp_path: Path, as_tests: bool) -> None:
    """A mistyped --audit made --as-tests print an empty suite and succeed: a regression
    suite of nothing, passing forever."""
    missing = tmp_path / "typo.jsonl"
    result = _replay(tmp_path, missing, as_tests=as_tests)
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.file == str(missing)
    assert result.exception.message == "no such audit log"

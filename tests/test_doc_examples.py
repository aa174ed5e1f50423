"""The examples of the README and ``docs/`` work with the code they document.

A field renamed, a rule made stricter, a command or flag renamed shows here,
not in a reader's first try of the example:

- each YAML block loads with its loader, told apart by its keys (policy
  tests, policy, approvers file, sandbox profile, else ``stockade.yaml``),
  from a file, as a user would load it; policy tests also pass against the
  shipped policy;
- each ``stockade …`` command line (in shell blocks and in inline code) names
  commands that exist, with options they have; so does each command the
  code's messages tell a user to run (`` `stockade …` `` in a string: the
  doctor's fixes, the errors' next steps);
- each HTTP endpoint they name (``GET /v1/runs/{id}``) is in the API's
  OpenAPI document (``docs/openapi.json``, which another test holds to the
  server) with that method, and ``/mcp`` is where the server mounts MCP;
- each metric they name (``stockade_…{labels}`` or with a metric's suffix)
  is one the platform registers.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator.approvals import load_approvers
from orchestrator.cli import cli
from orchestrator.config import ServerSettings, load_config
from orchestrator.metrics import Metrics
from orchestrator.policy import load_policy, load_policy_tests, parse_policy, run_policy_tests
from orchestrator.sandbox.profile import SandboxProfile

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIPPED_POLICY = ROOT / "policies" / "default.yaml"
_POLICY_KEYS = {"rules", "rate_limits", "model_limits", "redact", "default"}
_SHELL = {"sh", "bash", "console", "shell", "text"}
_INLINE_COMMAND = re.compile(r"`(stockade [^`\n]+)`")
# In a shell line: "stockade" and its words up to a comment, a pipe or a redirection.
_SHELL_COMMAND = re.compile(r"(?:^|[\s/])(stockade [^#|>]*)")


def fenced(path: Path) -> Iterator[tuple[str, str, str]]:
    """Each fenced block of ``path``: its language, ``file:line`` of its first line, its text."""
    language: str | None = None
    start, lines = 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("```"):
            lines.append(line)
        elif language is None:
            language, start, lines = line[3:].strip() or "text", number + 1, []
        else:
            yield language, f"{path.relative_to(ROOT)}:{start}", "\n".join(lines) + "\n"
            language = None


YAML_BLOCKS = [
    (where, text)
    for path in DOCUMENTS
    for language, where, text in fenced(path)
    if language == "yaml"
]


def kind(data: dict[str, Any]) -> str:
    keys = set(data)
    if "cases" in keys:
        return "policy tests"
    if keys & _POLICY_KEYS:
        return "policy"
    if keys & {"auto", "webhook"} or keys == {"elicitation"}:
        return "approvers"
    if "name" in keys:
        return "profile"
    return "stockade.yaml"


def load(kind: str, path: Path) -> object:
    if kind == "policy tests":
        # The documents' cases are the shipped policy's: they must also pass against it.
        report = run_policy_tests(
            load_policy(SHIPPED_POLICY), SHIPPED_POLICY, [load_policy_tests(path)]
        )
        assert report.ok, [outcome.as_dict() for outcome in report.failed]
        return report
    if kind == "policy":
        return parse_policy(path.read_text(), source=str(path))
    if kind == "approvers":
        return load_approvers(path)
    if kind == "profile":
        return SandboxProfile.model_validate(yaml.safe_load(path.read_text()))
    return load_config(path, environ={})


def test_the_readme_has_its_examples() -> None:
    readme = [text for where, text in YAML_BLOCKS if where.startswith("README")]
    kinds = {kind(yaml.safe_load(text)) for text in readme}
    assert kinds == {"stockade.yaml", "policy", "policy tests", "approvers", "profile"}


@pytest.mark.parametrize(("where", "text"), YAML_BLOCKS, ids=[where for where, _ in YAML_BLOCKS])
def test_each_yaml_example_loads(where: str, text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{where}: not a mapping"
    path = tmp_path / f"{where.replace('/', '-').replace(':', '-')}.yaml"
    path.write_text(text)
    assert load(kind(data), path) is not None


def command_lines() -> dict[str, str]:
    """Each ``stockade …`` command the documents show, and where (one place each)."""
    found: dict[str, str] = {}
    for path in DOCUMENTS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for command in _INLINE_COMMAND.findall(line):
                found.setdefault(command, f"{path.relative_to(ROOT)}:{number}")
        for language, where, text in fenced(path):
            if language not in _SHELL:
                continue
            for line in text.splitlines():
                shown = _SHELL_COMMAND.search(line)
                if shown and not line.lstrip().startswith("#"):
                    found.setdefault(shown.group(1).strip(), where)
    return found


def mistake(command_line: str) -> str | None:
    """What is wrong with ``command_line`` (a subcommand or an option it names), or None."""
    words = command_line.split()[1:]
    context = click.Context(cli, info_name="stockade")
    command: click.Command = cli
    named = ["stockade"]
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(context, words[0])
        if sub is None:
            if re.fullmatch(r"[a-z][a-z-]*", words[0]):
                return f"{' '.join(named)} has no command {words[0]!r}"
            break  # an argument (a goal in quotes, a placeholder)
        context = click.Context(sub, info_name=words[0], parent=context)
        command, named, words = sub, [*named, words[0]], words[1:]
    if "--" in words:
        words = words[: words.index("--")]  # what follows is the sandbox's command
    options = {"--help"} | {
        option for param in command.params for option in [*param.opts, *param.secondary_opts]
    }
    unknown = [word.split("=")[0] for word in words if word.startswith("--")]
    unknown = [option for option in unknown if option not in options]
    return f"{' '.join(named)} has no option {', '.join(unknown)}" if unknown else None


def test_each_command_line_names_commands_and_options_that_exist() -> None:
    found = command_lines()
    assert len(found) > 50, "the documents' command lines are found"
    wrong = {where: f"{line}: {why}" for line, where in found.items() if (why := mistake(line))}
    assert wrong == {}


def test_a_mistake_is_found() -> None:
    assert mistake("stockade runs shwo") == "stockade runs has no command 'shwo'"
    assert mistake("stockade tools call --worksp x") == "stockade tools call has no option --worksp"
    assert mistake("stockade sandbox run --run-id r1 -- sh -c 'ls --colour'") is None
    assert mistake('stockade run "Migrate the schema" --run-id mig-1') is None


def commands_in_messages() -> dict[str, str]:
    """Each `` `stockade …` `` in a string of the code (an f-string's fields as ``{}``)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    str(part.value) if isinstance(part, ast.Constant) else "{}"
                    for part in node.values
                )
            else:
                continue
            for command in re.findall(r"`(stockade [^`]+)`", text):
                found.setdefault(command, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_each_command_a_message_names_exists() -> None:
    found = commands_in_messages()
    assert len(found) > 30, "the messages' commands are found"
    wrong = {where: f"{line}: {why}" for line, where in found.items() if (why := mistake(line))}
    assert wrong == {}


def endpoints() -> dict[tuple[str, str], str]:
    """Each ``METHOD /path`` the documents name (the query left out), and where."""
    found: dict[tuple[str, str], str] = {}
    for path in DOCUMENTS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for method, route in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[\w{}/.-]+)", line):
                found.setdefault((method, route), f"{path.relative_to(ROOT)}:{number}")
    return found


def test_each_endpoint_the_documents_name_is_served() -> None:
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    served = [
        (method.upper(), re.compile(re.sub(r"\{[^}]+\}", "[^/]+", route) + "$"))
        for route, operations in spec["paths"].items()
        for method in operations
    ]
    found = endpoints()
    assert len(found) > 10, "the documents' endpoints are found"
    mcp = ServerSettings().mcp_path
    unknown = {
        where: f"{method} {route}"
        for (method, route), where in found.items()
        if route != mcp
        and not any(method == verb and pattern.match(route) for verb, pattern in served)
    }
    assert unknown == {}


# A metric's name as the documents write it: before its labels, or ending as metrics end.
_METRIC = re.compile(
    r"\b(stockade_\w+?)(?:\{|(?<=_total)\b|(?<=_seconds)\b|(?<=_bytes)\b|(?<=_bucket)\b)"
)


def test_each_metric_the_documents_name_is_registered() -> None:
    registered = {family.name for family in Metrics().registry.collect()}
    found = {
        name: f"{path.relative_to(ROOT)}:{number}"
        for path in DOCUMENTS
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for name in _METRIC.findall(line)
    }
    assert len(found) > 20, "the documents' metrics are found"
    # A counter's family is named without its _total, a histogram's without _bucket.
    unknown = {
        where: name
        for name, where in found.items()
        if re.sub(r"_(total|bucket)$", "", name) not in registered and name not in registered
    }
    assert unknown == {}

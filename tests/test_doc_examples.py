"""The YAML examples of the README and ``docs/`` load with the loaders they document.

A field renamed, a default's name changed or a rule made stricter shows here,
not in a reader's first try of the example. Each block is told apart by its
keys (policy tests, policy, approvers file, sandbox profile, else
``stockade.yaml``) and loaded from a file, as a user would.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.approvals import load_approvers
from orchestrator.config import load_config
from orchestrator.policy import parse_policy
from orchestrator.policy._suite import load_policy_tests
from orchestrator.sandbox.profile import SandboxProfile

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)
_POLICY_KEYS = {"rules", "rate_limits", "model_limits", "redact", "default"}


def yaml_blocks() -> list[tuple[str, str]]:
    """Each YAML block of the documents: where its text starts (``file:line``), and the text."""
    return [
        (f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, found.start(1)) + 1}", found.group(1))
        for path in DOCUMENTS
        for text in [path.read_text()]
        for found in _BLOCK.finditer(text)
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
        return load_policy_tests(path)
    if kind == "policy":
        return parse_policy(path.read_text(), source=str(path))
    if kind == "approvers":
        return load_approvers(path)
    if kind == "profile":
        return SandboxProfile.model_validate(yaml.safe_load(path.read_text()))
    return load_config(path, environ={})


BLOCKS = yaml_blocks()


def test_the_readme_has_its_examples() -> None:
    kinds = {kind(yaml.safe_load(text)) for where, text in BLOCKS if where.startswith("README")}
    assert kinds == {"stockade.yaml", "policy", "policy tests", "approvers", "profile"}


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_each_yaml_example_loads(where: str, text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{where}: not a mapping"
    path = tmp_path / f"{where.replace('/', '-').replace(':', '-')}.yaml"
    path.write_text(text)
    assert load(kind(data), path) is not None

"""Reading policy files: the project's one YAML loader, applied to :class:`Policy`."""

from __future__ import annotations

from pathlib import Path

from orchestrator.policy._model import Policy
from orchestrator.yamlfile import load_yaml_model, parse_yaml_model

__all__ = ["load_policy", "parse_policy", "parse_yaml_model"]


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; errors name ``source``, the line and the field."""
    return parse_yaml_model(text, Policy, source=source)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file.

    Raises :class:`~orchestrator.errors.ConfigError` like
    ``policies/x.yaml:12: rules[3].decision: expected one of allow, deny,
    require_approval, got 'alow'``.
    """
    return load_yaml_model(path, Policy, what="policy")

"""The JSON Schema of policy files, for editors (``policies/policy.schema.json``)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.policy._model import Policy

__all__ = ["policy_json_schema", "render_policy_schema"]


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the policy file format."""
    schema = Policy.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Stockade policy",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def render_policy_schema() -> str:
    """The schema exactly as committed in ``policies/policy.schema.json``.

    Regenerate with ``python -m orchestrator.policy > policies/policy.schema.json``
    (or ``stockade policy schema``); a test keeps the file and the code in step.
    """
    return json.dumps(policy_json_schema(), indent=2, sort_keys=False) + "\n"

"""The JSON Schema of ``stockade.yaml``, for editors (shipped as ``stockade.schema.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config._model import StockadeConfig

__all__ = ["SCHEMA_FILE", "config_schema", "render_config_schema"]

SCHEMA_FILE = Path(__file__).resolve().parent / "stockade.schema.json"
"""The committed schema (a test keeps it in step with the code)."""


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the configuration file."""
    schema = StockadeConfig.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Stockade configuration",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def render_config_schema() -> str:
    """The schema exactly as committed; regenerate with ``stockade config schema``."""
    return json.dumps(config_schema(), indent=2) + "\n"

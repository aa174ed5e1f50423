"""Loading sandbox profiles from files, with errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pydantic
import yaml

from orchestrator.errors import ConfigError
from orchestrator.sandbox.profile import SandboxProfile

__all__ = ["load_profile"]


def load_profile(path: Path) -> SandboxProfile:
    """Read a profile from a YAML (or JSON) file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read profile: {exc.strerror}", file=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {exc}", file=str(path), line=mark.line + 1 if mark else None
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of profile fields", file=str(path))
    try:
        return SandboxProfile.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        got = f" (got {first['input']!r})" if first["type"] != "missing" else ""
        raise ConfigError(f"{first['msg']}{got}", file=str(path), field=field) from exc

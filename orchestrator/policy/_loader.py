"""Loading policy files: YAML in, a Policy out, or an error naming file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import yaml

from orchestrator.errors import ConfigError
from orchestrator.policy._model import Policy

__all__ = ["load_policy", "parse_policy"]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a later key would silently win)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} (first at line {seen[key]})",
                line=key_node.start_mark.line + 1,
                field=str(key),
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The line of the deepest node the error location reaches."""
    node, line = root, (root.start_mark.line + 1 if root else None)
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == step:
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            # A step that is no key (a union's tag) is skipped, not followed.
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value)
        ):
            node = node.value[step]
            line = node.start_mark.line + 1
    return line


def _field(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for step in loc:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif step not in ("leaf", "all", "any", "not") or not parts or parts[-1] != step:
            parts.append(f".{step}" if parts else step)
    return "".join(parts)


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; errors name ``source``, the line and the field."""
    try:
        root = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(exc.message, file=source, line=exc.line, field=exc.field) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            file=source,
            line=mark.line + 1 if mark else None,
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError("a policy is a mapping with at least 'version: 1'", file=source)
    try:
        return Policy.model_validate(data)
    except pydantic.ValidationError as exc:
        # A typo'd key shows up twice: as an unknown key and as a missing one.
        # The unknown key is the one that names the mistake.
        first = min(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        loc = tuple(first["loc"])
        got = "" if first["type"] == "missing" else f", got {first['input']!r}"
        raise ConfigError(
            f"{first['msg']}{got}", file=source, line=_line_of(root, loc), field=_field(loc)
        ) from exc


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read policy: {exc.strerror}", file=str(path)) from exc
    return parse_policy(text, source=str(path))

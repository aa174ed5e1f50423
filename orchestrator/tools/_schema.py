"""JSON Schema of a tool's parameters, generated from its type hints with pydantic."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from orchestrator.errors import ConfigError

__all__ = ["is_strict_compatible", "parameters_model", "parameters_schema"]

# Keywords OpenAI's strict mode accepts; a schema using others is sent non-strict.
_STRICT_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "anyOf",
        "description", "$defs", "$ref", "const",
    }
)  # fmt: skip


def parameters_model(
    func: Callable[..., Any], *, name: str, descriptions: dict[str, str]
) -> type[BaseModel]:
    """A pydantic model (``extra="forbid"``) of ``func``'s parameters."""
    where = f"{func.__module__}.{func.__qualname__}"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"type hints of {where} cannot be resolved: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"{where}: *args/**kwargs cannot be described to a model")
        if param.name not in hints:
            raise ConfigError(f"{where}: parameter {param.name!r} has no type hint")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            hints[param.name],
            Field(default=default, description=descriptions.get(param.name)),
        )
    model_name = "".join(part.title() for part in name.replace(".", "_").split("_")) + "Arguments"
    try:
        return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: parameters cannot be turned into a schema: {exc}") from exc


def _drop_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _drop_titles(value)
            for key, value in node.items()
            # "title" is noise for a model, except as the name of a property.
            if key != "title" or not isinstance(value, str)
        }
    if isinstance(node, list):
        return [_drop_titles(item) for item in node]
    return node


def parameters_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of the parameters, without pydantic's titles."""
    schema: dict[str, Any] = _drop_titles(model.model_json_schema())
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    return schema


def is_strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts ``schema`` as is.

    Strict mode needs every object to list all its properties as required and
    forbid others, and allows only a subset of keywords. A tool with optional
    parameters (defaults) is therefore sent with ``strict: false``; Stockade
    validates the arguments host-side either way.
    """
    if isinstance(schema, list):
        return all(is_strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if any(key not in _STRICT_KEYWORDS for key in schema):
        return False
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        closed = schema.get("additionalProperties") is False
        all_required = sorted(schema.get("required", [])) == sorted(properties)
        if not (closed and all_required):
            return False
        if not all(is_strict_compatible(value) for value in properties.values()):
            return False
    children: list[Any] = []
    if "items" in schema:
        children.append(schema["items"])
    children.extend(schema.get("anyOf", []))
    children.extend(schema.get("$defs", {}).values())
    return all(is_strict_compatible(child) for child in children)

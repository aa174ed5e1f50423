"""The effective configuration: built-in defaults < file < environment < command-line flags.

Each layer is a set of (dotted field → value); later layers win field by
field. Where every value came from is kept, so ``stockade config show`` can
say it and an invalid value is reported where it was written: the file and
line, the environment variable, or the flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from orchestrator.config._env import config_file_from_env, environment_layer
from orchestrator.config._model import StockadeConfig
from orchestrator.errors import ConfigError
from orchestrator.yamlfile import compose_yaml, construct_yaml, parse_yaml_model, read_yaml_text

__all__ = ["PATH_FIELDS", "LoadedConfig", "load_config"]

PATH_FIELDS = frozenset(
    {
        "state_dir",
        "policy",
        "workspaces_dir",
        "images.sources",
        "audit.path",
        "approvals.database",
        "approvals.approvers",
        "server.tokens",
        "metrics.targets_dir",
    }
)
"""Fields holding paths: relative ones are resolved against where they were written."""

DEFAULT_SOURCE = "default"


@dataclass(frozen=True, kw_only=True)
class LoadedConfig:
    """A validated configuration and where each of its values came from."""

    config: StockadeConfig
    """The effective configuration."""
    file: Path | None
    """The configuration file read, if any."""
    sources: Mapping[str, str]
    """Dotted field → origin (``stockade.yaml:12``, ``env STOCKADE_HOME``, ``flag --policy``)."""

    def source_of(self, field: str) -> str:
        """Where ``field`` (or the section holding it) was set; ``default`` when nowhere."""
        parts = field.split(".")
        for end in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:end]))
            if found is not None:
                return found
        # A section set as a whole shows its leaves as coming from there too;
        # a field below a set leaf (a profile's limit) likewise.
        prefix = field + "."
        below = {source for key, source in self.sources.items() if key.startswith(prefix)}
        return below.pop() if len(below) == 1 else DEFAULT_SOURCE


def _leaf_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Dotted path → line of each leaf (scalars and lists) of a mapping node."""
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key, value in node.value:
        dotted = f"{prefix}{key.value}"
        if isinstance(value, yaml.MappingNode) and value.value:
            lines.update(_leaf_lines(value, dotted + "."))
        else:
            lines[dotted] = key.start_mark.line + 1
    return lines


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str | Path) or not str(value).strip():
        return value  # the model reports the wrong type, or the empty path
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _file_layer(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's data (paths made absolute) and the origin of each leaf."""
    text = read_yaml_text(path, what="configuration file")
    source = str(path)
    # Validated alone first: a mistake in the file is reported with its line.
    parse_yaml_model(text, StockadeConfig, source=source)
    root = compose_yaml(text, source)
    data: dict[str, Any] = construct_yaml(root, source=source) if root is not None else {}
    origins = (
        {field: f"{source}:{line}" for field, line in _leaf_lines(root).items()} if root else {}
    )
    base = path.resolve().parent
    for field in PATH_FIELDS:
        *parents, leaf = field.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) is not None:
            node[leaf] = _resolve_path(node[leaf], base)
    secrets = data.get("secrets")
    if isinstance(secrets, dict):  # each secret's files, like every path of the file
        for secret in secrets.values():
            if not isinstance(secret, dict):
                continue  # the model's validation names it
            if secret.get("file") is not None:
                secret["file"] = _resolve_path(secret["file"], base)
            bindings = secret.get("bind")
            for binding in bindings if isinstance(bindings, list) else ():
                if isinstance(binding, dict) and binding.get("ca_file") is not None:
                    binding["ca_file"] = _resolve_path(binding["ca_file"], base)
    return data, origins


def _first_error(exc: pydantic.ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    message = str(error.get("ctx", {}).get("error", error["msg"]))
    return field, f"{message} (got {error['input']!r})" if error["type"] != "missing" else message


def load_config(
    file: str | Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """The effective configuration.

    ``file`` (the ``--config`` flag) beats ``$STOCKADE_CONFIG``; with neither,
    only the environment and the flags change the built-in defaults.
    ``flags`` maps dotted fields to command-line values (``None`` values are
    ignored). ``environ`` defaults to the process environment. Raises
    :class:`~orchestrator.errors.ConfigError` naming the file, line and field,
    or the variable or flag, that holds a bad value.
    """
    chosen = file if file is not None else config_file_from_env(environ)
    path = Path(chosen).expanduser() if chosen is not None else None
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        data, sources = _file_layer(path)
    cwd = Path.cwd()
    for field, (value, variable) in environment_layer(environ).items():
        _set(data, field, _resolve_path(value, cwd) if field in PATH_FIELDS else value)
        sources[field] = f"env {variable}"
    for field, value in (flags or {}).items():
        if value is None:
            continue
        _set(data, field, _resolve_path(value, cwd) if field in PATH_FIELDS else value)
        sources[field] = f"flag --{field.rsplit('.', 1)[-1].replace('_', '-')}"
    try:
        config = StockadeConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        field, message = _first_error(exc)
        loaded = LoadedConfig(config=StockadeConfig(), file=path, sources=sources)
        origin = loaded.source_of(field)
        where, _, line = (
            origin.rpartition(":") if path and origin.startswith(str(path)) else ("", "", "")
        )
        if where:
            raise ConfigError(message, file=where, line=int(line), field=field) from exc
        raise ConfigError(f"{message} (set by {origin})", field=field) from exc
    return LoadedConfig(config=config, file=path, sources=sources)

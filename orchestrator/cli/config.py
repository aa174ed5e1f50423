"""``stockade config …``: check a configuration file, show the effective one, print its schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from orchestrator.cli._common import config_option, echo_json, json_option, load, table
from orchestrator.config import LoadedConfig, load_config, render_config_schema
from orchestrator.config._schema import SCHEMA_FILE
from orchestrator.platform import check_configuration, policy_file

__all__ = ["config"]

_EXAMPLE = SCHEMA_FILE.with_name("stockade.example.yaml")


@click.group()
def config() -> None:
    """The platform configuration (stockade.yaml)."""


@config.command("check")
@json_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(as_json: bool, file: Path) -> None:
    """Validate FILE and what it names (policy, approvers, toolkits, profiles); exit 2 if wrong.

    The environment is ignored: this checks the file as written.
    """
    loaded = load_config(file, environ={})
    check_configuration(loaded)
    settings = loaded.config
    profiles = sorted(settings.sandbox.effective_profiles())
    if as_json:
        echo_json(
            {
                "file": str(file),
                "ok": True,
                "profiles": profiles,
                "toolkits": list(settings.toolkits),
                "policy": str(policy_file(settings)),
            }
        )
        return
    click.echo(
        f"{file}: ok (profiles: {', '.join(profiles)}; {len(settings.toolkits)} toolkits; "
        f"policy {policy_file(settings)})"
    )


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)]


def _effective(loaded: LoadedConfig) -> dict[str, Any]:
    """The configuration as used: built-in profiles and the derived paths filled in."""
    settings = loaded.config
    document = settings.model_dump(mode="json")
    document["policy"] = str(policy_file(settings))
    document["workspaces_dir"] = str(settings.workspaces_root)
    document["audit"]["path"] = str(settings.audit_path)
    document["approvals"]["database"] = str(settings.approvals_db)
    document["sandbox"]["profiles"] = {
        name: profile.model_dump(mode="json", exclude={"name"})
        for name, profile in settings.sandbox.effective_profiles().items()
    }
    return document


@config.command("show")
@config_option
@json_option
def config_show(config_file: Path | None, as_json: bool) -> None:
    """The effective configuration, each value with where it came from.

    Origins: a file and line, `env STOCKADE_…`, `flag --…`, or `default`.
    """
    loaded = load(config_file)
    rows = [(field, value, loaded.source_of(field)) for field, value in _leaves(_effective(loaded))]
    if as_json:
        echo_json({field: {"value": value, "source": source} for field, value, source in rows})
        return
    click.echo(f"configuration file: {loaded.file or 'none (STOCKADE_CONFIG not set)'}")
    table(["FIELD", "VALUE", "FROM"], [(f, _shown(v), s) for f, v, s in rows])


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "[]"
    return "null" if value is None else str(value)


@config.command("schema")
def config_schema_command() -> None:
    """Print the JSON Schema of stockade.yaml (for editors)."""
    click.echo(render_config_schema(), nl=False)


@config.command("example")
def config_example() -> None:
    """Print a commented example stockade.yaml with every section."""
    click.echo(_EXAMPLE.read_text(encoding="utf-8"), nl=False)

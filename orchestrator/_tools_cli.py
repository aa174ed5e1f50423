"""``stockade tools …``: inspect the tools of the configured toolkits."""

from __future__ import annotations

import json
import os

import click

from orchestrator.tools import ToolRegistry

__all__ = ["tools"]


def _registry(toolkits: tuple[str, ...]) -> ToolRegistry:
    registry = ToolRegistry()
    names = toolkits or tuple(
        name for name in os.environ.get("STOCKADE_TOOLKITS", "").split(",") if name
    )
    for name in names:
        registry.load(name)
    return registry


_TOOLKIT_OPTION = click.option(
    "--toolkit",
    "toolkits",
    multiple=True,
    help="Importable toolkit package (repeatable; default: $STOCKADE_TOOLKITS, comma-separated).",
)


@click.group()
def tools() -> None:
    """Tools the model can call."""


@tools.command("list")
@_TOOLKIT_OPTION
def tools_list(toolkits: tuple[str, ...]) -> None:
    """A table of the tools, their profiles and descriptions."""
    specs = _registry(toolkits).tools()
    if not specs:
        click.echo("no tools (name toolkits with --toolkit or $STOCKADE_TOOLKITS)")
        return
    width = max(len(spec.name) for spec in specs)
    click.echo(f"{'TOOL':<{width}}  {'PROFILE':<12}  DESCRIPTION")
    for spec in specs:
        summary = spec.description.splitlines()[0]
        click.echo(f"{spec.name:<{width}}  {spec.profile:<12}  {summary}")


@tools.command("schema")
@_TOOLKIT_OPTION
@click.argument("name")
def tools_schema(toolkits: tuple[str, ...], name: str) -> None:
    """The tool NAME in OpenAI's function-calling format (JSON)."""
    registry = _registry(toolkits)
    spec = registry.get(name)
    if spec is None:
        known = ", ".join(s.name for s in registry.tools()) or "none"
        raise click.ClickException(f"unknown tool {name!r} (tools: {known})")
    click.echo(json.dumps(spec.openai(), indent=2))

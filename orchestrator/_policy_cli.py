"""``stockade policy …``: validate policy files and export their JSON Schema."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.policy import load_policy, render_policy_schema

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """Policy files."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def policy_check(files: tuple[Path, ...]) -> None:
    """Validate policy FILES; errors name the file, line and field."""
    for path in files:
        loaded = load_policy(path)
        click.echo(
            f"{path}: ok ({len(loaded.rules)} rules, {len(loaded.rate_limits)} rate limits, "
            f"default {loaded.default})"
        )


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of the policy format (for editors)."""
    click.echo(render_policy_schema(), nl=False)

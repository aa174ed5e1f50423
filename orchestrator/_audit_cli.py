"""``stockade audit …``: check and follow the audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from orchestrator.audit import tail, verify

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def audit_verify(path: Path) -> None:
    """Check the hash chain of the log at PATH; exit 1 at the first tampered record."""
    report = verify(path)
    if report.ok:
        click.echo(f"{path}: ok, {report.records} records, chain intact")
        return
    click.echo(
        f"{path}:{report.line}: {report.problem} ({report.records} good records before)", err=True
    )
    sys.exit(1)


@audit.command("tail")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they are written.")
def audit_tail(path: Path, follow: bool) -> None:
    """Print the records of the log at PATH, one JSON object a line."""
    for record in tail(path, follow=follow):
        click.echo(json.dumps(record, ensure_ascii=False))

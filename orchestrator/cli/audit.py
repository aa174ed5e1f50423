"""``stockade audit …``: check and follow the audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from orchestrator.audit import tail, verify
from orchestrator.cli._common import EXIT_FAILED, config_option, echo_json, json_option, load

__all__ = ["audit"]

_PATH = click.argument(
    "path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


def _log_path(config_file: Path | None, path: Path | None) -> Path:
    return path or load(config_file).config.audit_path


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@config_option
@json_option
@_PATH
def audit_verify(config_file: Path | None, as_json: bool, path: Path | None) -> None:
    """Check the hash chain of the log at PATH (default: the configured log); exit 1 if broken."""
    log = _log_path(config_file, path)
    report = verify(log)
    # A rotated log is several files, one chain; a problem is named with its own file.
    bad = str(report.file) if report.file else None
    if as_json:
        echo_json({"file": str(log), "ok": report.ok, "records": report.records,
                   "files": [str(file) for file in report.files], "bad_file": bad,
                   "line": report.line, "problem": report.problem})  # fmt: skip
    elif report.ok:
        across = f" across {len(report.files)} files" if len(report.files) > 1 else ""
        click.echo(f"{log}: ok, {report.records} records, chain intact{across}")
    else:
        click.echo(
            f"{bad or log}:{report.line}: {report.problem} ({report.records} good records before)",
            err=True,
        )
    if not report.ok:
        sys.exit(EXIT_FAILED)


@audit.command("tail")
@config_option
@_PATH
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they are written.")
def audit_tail(config_file: Path | None, path: Path | None, follow: bool) -> None:
    """Print the records of the log at PATH (default: the configured log), one JSON a line."""
    for record in tail(_log_path(config_file, path), follow=follow):
        click.echo(json.dumps(record, ensure_ascii=False))

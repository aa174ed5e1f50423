"""``stockade audit …``: check and follow the audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.audit import OpenIntent, tail, verify
from orchestrator.audit._files import archives
from orchestrator.audit.timeline import CallEntry, call_timeline
from orchestrator.cli._common import (
    EXIT_FAILED,
    config_option,
    echo_json,
    json_option,
    load,
    not_found,
)
from orchestrator.display import for_display, json_for_people

__all__ = ["audit"]

# Intents without outcome listed by ``audit verify`` (the JSON lists them all).
_SHOWN_INTENTS = 20

_PATH = click.argument(
    "path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


def _log_path(config_file: Path | None, path: Path | None) -> Path:
    return path or load(config_file).config.audit_path


def _nothing_recorded(log: Path) -> click.ClickException:
    return not_found(
        f"no audit log at {log}: nothing is recorded there yet; name the log (PATH) or the "
        "configuration whose audit.path it is (--config)"
    )


def _existing_log(config_file: Path | None, path: Path | None) -> Path:
    """The log to read, refused when neither it nor a file rotated out of it exists: a
    mistyped path or configuration would otherwise read as a log with nothing in it."""
    log = _log_path(config_file, path)
    if not log.exists() and not archives(log):
        raise _nothing_recorded(log)
    return log


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _intent_line(intent: OpenIntent) -> str:
    # Whoever made the call chose its id (and can rewrite the log): nothing may act on a terminal.
    return for_display(
        f"  {intent.file}:{intent.line}  seq {intent.seq}  {intent.ts}  {intent.tool} "
        f"call {intent.call_id} (run {intent.run_id}, attempt {intent.attempt})"
    )


@audit.command("verify")
@config_option
@json_option
@_PATH
def audit_verify(config_file: Path | None, as_json: bool, path: Path | None) -> None:
    """Check the hash chain of the log at PATH (default: the configured log); exit 1 if broken.

    Intents without an outcome (a call whose process died or could not write its
    result) are listed apart: they are not tampering and do not fail the check.
    """
    log = _log_path(config_file, path)
    try:
        report = verify(log)
    except FileNotFoundError as exc:
        raise _nothing_recorded(log) from exc
    # A rotated log is several files, one chain; a problem is named with its own file.
    bad = str(report.file) if report.file else None
    if as_json:
        open_intents = [intent.as_dict() for intent in report.open_intents]
        echo_json({"file": str(log), "ok": report.ok, "records": report.records,
                   "files": [str(file) for file in report.files], "bad_file": bad,
                   "line": report.line, "problem": report.problem,
                   "intents_without_outcome": open_intents})  # fmt: skip
    elif report.ok:
        across = f" across {len(report.files)} files" if len(report.files) > 1 else ""
        click.echo(f"{log}: ok, {report.records} records, chain intact{across}")
    else:
        # The problem quotes the bad line's seq, which a forger chose.
        click.echo(
            for_display(
                f"{bad or log}:{report.line}: {report.problem} "
                f"({report.records} good records before)"
            ),
            err=True,
        )
    if report.open_intents and not as_json:
        count = len(report.open_intents)
        click.echo(
            f"{count} intent{'s' if count > 1 else ''} without an outcome (not tampering: the "
            "process died or could not write the result, so the call may have run; or it is "
            "still running):"
        )
        for intent in report.open_intents[:_SHOWN_INTENTS]:
            click.echo(_intent_line(intent))
        if count > _SHOWN_INTENTS:
            click.echo(f"  and {count - _SHOWN_INTENTS} more (--json lists them all)")
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _entry_lines(entry: CallEntry) -> list[str]:
    # Field types are what a record holds, not what a writer makes: an unkeyed chain can be
    # rewritten and rehashed, and the timeline must still show it (`audit verify` judges it).
    lines = [f"{entry.call_id}  {entry.tool}  {entry.status}"]
    for record in entry.approvals:
        approval = record.get("approval")
        approval = approval if isinstance(approval, dict) else {}
        who = f" by {approval['decided_by']}" if approval.get("decided_by") else ""
        lines.append(
            f"  seq {record.get('seq')}  {record.get('ts', '')}  {record.get('event')}: "
            f"{approval.get('status', '')}{who}"
        )
    for record in entry.intents:
        lines.append(
            f"  seq {record.get('seq')}  {record.get('ts', '')}  intent: attempt "
            f"{record.get('attempt')}, {record.get('decision')} by rule "
            f"{record.get('rule') or 'default'}, profile {record.get('sandbox_profile')}"
        )
    outcome = entry.outcome
    if outcome is not None:
        changed = outcome.get("files_changed")
        paths = len(changed) if isinstance(changed, list) else 0  # a bounded list: see --json
        took = outcome.get("duration_s", 0)
        took = f"{took:.3f}" if isinstance(took, int | float) else repr(took)
        first, *more = _error_lines(outcome.get("error")) or [""]
        lines.append(
            f"  seq {outcome.get('seq')}  {outcome.get('ts', '')}  outcome: "
            f"{outcome.get('status')} in {took} s"
            + (f" on host {outcome['host']}" if outcome.get("host") else "")
            + (f", {paths} workspace path{'s' * (paths != 1)} changed" if paths else "")
            + (f": {first}" if first else "")
        )
        # A traceback stays under its outcome, not at the margin where calls begin.
        lines.extend(f"      {line}" for line in more)
    return lines


def _error_lines(error: object) -> list[str]:
    """An outcome's error as lines; a bounded one (a long traceback) as its head, marked."""
    if isinstance(error, dict) and isinstance(error.get("head"), str):
        size = error.get("bytes")
        return [
            *error["head"].splitlines(),
            f"[… cut: {size} bytes in all, sha256 {error.get('sha256')}]",
        ]
    return str(error).splitlines() if error else []


@audit.command("timeline")
@config_option
@json_option
@click.option("--run", "run_id", help="Only the calls of this run.")
@_PATH
def audit_timeline(
    config_file: Path | None, as_json: bool, run_id: str | None, path: Path | None
) -> None:
    """Each call of the log at PATH: approvals, the intent of each attempt, and the outcome."""
    log = _existing_log(config_file, path)
    entries = call_timeline(log, run_id=run_id)
    if not entries and not as_json:
        # Said, on standard error: an empty screen reads as a command that did nothing.
        whose = f"of run {run_id!r} " if run_id is not None else ""
        click.echo(for_display(f"no calls {whose}in {log}"), err=True)
    if as_json:
        echo_json(
            [
                {"call_id": e.call_id, "run_id": e.run_id, "tool": e.tool, "status": e.status,
                 "unfinished": e.unfinished, "approvals": e.approvals, "intents": e.intents,
                 "outcome": e.outcome}
                for e in entries
            ]
        )  # fmt: skip
        return
    for entry in entries:
        click.echo(for_display("\n".join(_entry_lines(entry))))  # tools' errors among them


@audit.command("tail")
@config_option
@_PATH
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they are written.")
def audit_tail(config_file: Path | None, path: Path | None, follow: bool) -> None:
    """Print the records of the log at PATH (default: the configured log), one JSON a line."""
    # Following waits for a log still to be written; reading once, nothing there is a mistake.
    log = _log_path(config_file, path) if follow else _existing_log(config_file, path)
    for record in tail(log, follow=follow):
        click.echo(json_for_people(record, indent=None, sort_keys=False))

"""``stockade policy …``: validate policy files and export their JSON Schema."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.audit.replay import ReplayChange, replay
from orchestrator.cli._common import EXIT_FAILED, config_option, echo_json, json_option, load
from orchestrator.policy import load_policy, render_policy_schema

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """Policy files."""


@policy.command("check")
@json_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def policy_check(as_json: bool, files: tuple[Path, ...]) -> None:
    """Validate policy FILES; errors name the file, line and field (exit 2)."""
    checked = {path: load_policy(path) for path in files}
    if as_json:
        echo_json(
            [
                {"file": str(path), "ok": True, "rules": len(p.rules),
                 "rate_limits": len(p.rate_limits), "default": p.default}
                for path, p in checked.items()
            ]
        )  # fmt: skip
        return
    for path, loaded in checked.items():
        click.echo(
            f"{path}: ok ({len(loaded.rules)} rules, {len(loaded.rate_limits)} rate limits, "
            f"default {loaded.default})"
        )


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of the policy format (for editors)."""
    click.echo(render_policy_schema(), nl=False)


def _change_line(change: ReplayChange) -> str:
    who = " ".join(
        f"{label}={value}"
        for label, value in (("principal", change.principal), ("run", change.run_id))
        if value
    )
    before = f"{change.before.value} (rule {change.before_rule or 'default'})"
    after = f"{change.after.value} (rule {change.after_rule or 'default'})"
    return (
        f"  seq {change.seq}  {change.ts}  {change.tool}{'  ' + who if who else ''}\n"
        f"      {before} -> {after}: {change.reason}"
    )


@policy.command("replay")
@config_option
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--audit",
    "audit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Audit log to replay. Default: the configuration's audit log.",
)
@json_option
@click.option("--fail-on-change", is_flag=True, help="Exit 1 when any decision would change.")
def policy_replay(
    config_file: Path | None,
    policy_file: Path,
    audit_path: Path | None,
    as_json: bool,
    fail_on_change: bool,
) -> None:
    """Decide the calls recorded in an audit log with POLICY_FILE; print what would change.

    A dry run: nothing is enforced. Arguments are replayed as recorded, with
    secrets redacted, so rules that look at a secret's value may differ live.
    """
    source = audit_path or load(config_file).config.audit_path
    report = replay(load_policy(policy_file), source)
    if not report.chain.ok:
        click.echo(
            f"warning: {source}:{report.chain.line}: {report.chain.problem}; "
            "the log was tampered with or damaged, so records may be missing",
            err=True,
        )
    if as_json:
        document = {
            "policy": str(policy_file),
            "audit": str(source),
            "chain_ok": report.chain.ok,
            "calls": report.calls,
            "skipped": report.skipped,
            "redacted": report.redacted,
            "summary": report.summary(),
            "changes": [change.as_dict() for change in report.changes],
        }
        echo_json(document)
    else:
        click.echo(
            f"replayed {report.calls} recorded calls from {source} against {policy_file} "
            f"({report.skipped} never reached the policy)"
        )
        if report.changes:
            click.echo(f"{len(report.changes)} decisions would change:")
            for change in report.changes:
                click.echo(_change_line(change))
            summary = ", ".join(f"{kind}: {count}" for kind, count in report.summary().items())
            click.echo(f"summary: {summary}")
        else:
            click.echo("no decision would change")
        if report.redacted:
            click.echo(
                f"note: {report.redacted} calls had redacted arguments and were decided as recorded"
            )
    if fail_on_change and report.changes:
        sys.exit(EXIT_FAILED)

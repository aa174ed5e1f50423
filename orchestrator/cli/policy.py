"""``stockade policy …``: validate, test and replay policy files; export their JSON Schemas."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.audit.regression import policy_tests_from_log, render_tests
from orchestrator.audit.replay import ReplayChange, replay
from orchestrator.cli._common import EXIT_FAILED, config_option, echo_json, json_option, load
from orchestrator.display import for_display
from orchestrator.policy import (
    CaseOutcome,
    PolicyTestReport,
    load_policy,
    load_policy_tests,
    render_policy_schema,
    render_policy_tests_schema,
    run_policy_tests,
)

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
@click.option("--tests", is_flag=True, help="The schema of policy test files instead.")
def policy_schema(tests: bool) -> None:
    """Print the JSON Schema of the policy format (for editors)."""
    click.echo(render_policy_tests_schema() if tests else render_policy_schema(), nl=False)


def _where(outcome: CaseOutcome) -> str:
    return f"{outcome.file}:{outcome.line}" if outcome.line else str(outcome.file)


def _print_test_report(report: PolicyTestReport, coverage: bool) -> None:
    for outcome in report.failed:
        click.echo(f"FAIL {_where(outcome)}: {outcome.name}")
        for problem in outcome.problems:
            click.echo(f"     {problem}")
    passed = len(report.outcomes) - len(report.failed)
    click.echo(
        f"{report.policy}: {passed} passed, {len(report.failed)} failed "
        f"({len(report.outcomes)} cases)"
    )
    if coverage:
        if report.unreached_rules:
            click.echo(f"rules no case reached ({len(report.unreached_rules)}):")
            for rule in report.unreached_rules:
                click.echo(f"  {rule}")
        else:
            click.echo("every rule was reached by a case")
        if not report.default_reached:
            click.echo("no case fell through to the default decision")


@policy.command("test")
@json_option
@click.option("--coverage", is_flag=True, help="Also list the rules no case reached.")
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument(
    "tests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def policy_test(as_json: bool, coverage: bool, policy_file: Path, tests: tuple[Path, ...]) -> None:
    """Run the cases of TESTS against POLICY_FILE; exit 1 if any fails.

    Each case is a call and what must happen to it (decision, rule, profile,
    deadline, or a rate limit after N calls). A failure names the rule that
    decided instead; a case naming a rule the policy no longer has fails.
    """
    loaded = load_policy(policy_file)
    suites = [load_policy_tests(path) for path in tests]
    report = run_policy_tests(loaded, policy_file, suites)
    if as_json:
        document = {
            "policy": str(policy_file),
            "tests": [str(path) for path in tests],
            "ok": report.ok,
            "passed": len(report.outcomes) - len(report.failed),
            "failed": len(report.failed),
            "cases": [outcome.as_dict() for outcome in report.outcomes],
        }
        if coverage:
            document["coverage"] = {
                "unreached_rules": report.unreached_rules,
                "default_reached": report.default_reached,
            }
        echo_json(document)
    else:
        _print_test_report(report, coverage)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _print_as_tests(source: Path, as_json: bool) -> None:
    document, skipped = policy_tests_from_log(source)
    if as_json:
        echo_json({"tests": document, "skipped": [s.as_dict() for s in skipped]})
        return
    click.echo(render_tests(document, skipped, str(source)), nl=False)
    if skipped:
        click.echo(f"{len(skipped)} recorded calls skipped (see the comments)", err=True)


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
@click.argument(
    "policy_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--audit",
    "audit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Audit log to replay. Default: the configuration's audit log.",
)
@json_option
@click.option("--fail-on-change", is_flag=True, help="Exit 1 when any decision would change.")
@click.option(
    "--as-tests",
    is_flag=True,
    help="Instead, print the recorded calls and their decisions as a policy test file "
    "(for `stockade policy test`); calls whose arguments were redacted or kept only as a "
    "hash are skipped, each with the reason.",
)
def policy_replay(
    *,
    config_file: Path | None,
    policy_file: Path | None,
    audit_path: Path | None,
    as_json: bool,
    fail_on_change: bool,
    as_tests: bool,
) -> None:
    """Decide the calls recorded in an audit log with POLICY_FILE; print what would change.

    A dry run: nothing is enforced. Arguments are replayed as recorded, with
    secrets redacted, so rules that look at a secret's value may differ live.
    With --as-tests, the log's decisions become a regression suite instead.
    """
    source = audit_path or load(config_file).config.audit_path
    if as_tests:
        _print_as_tests(source, as_json)
        return
    if policy_file is None:
        raise click.UsageError("name the POLICY_FILE to replay the log against")
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
                click.echo(for_display(_change_line(change)))  # the log's tool names, reasons
            summary = ", ".join(f"{kind}: {count}" for kind, count in report.summary().items())
            click.echo(f"summary: {summary}")
        else:
            click.echo("no decision would change")
        if report.redacted:
            click.echo(
                f"note: {report.redacted} calls had redacted arguments and were decided as recorded"
            )
        if report.unfinished:
            click.echo(
                f"note: {report.unfinished} calls have an intent but no outcome on record "
                "(their process died mid-call); replayed from the intent"
            )
    if fail_on_change and report.changes:
        sys.exit(EXIT_FAILED)

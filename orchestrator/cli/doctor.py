"""``stockade doctor``: check the engine, runtimes, images, state and configuration."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo_json,
    json_option,
    load,
    run_async,
    table,
)
from orchestrator.config import LoadedConfig, StockadeConfig
from orchestrator.errors import ConfigError
from orchestrator.platform.doctor import Check, diagnose

__all__ = ["doctor"]

_MARK = {"ok": "ok", "warning": "warn", "failed": "FAIL", "skipped": "skip"}


@click.command()
@config_option
@json_option
def doctor(config_file: Path | None, as_json: bool) -> None:
    """Check that this machine can run tool calls under the configuration; exit 1 if not.

    Each failing line names the one command that fixes it. A warning (an old
    base image) names its fix too, but does not change the exit code.
    """
    try:
        loaded = load(config_file)
    except ConfigError as exc:
        # The file itself is broken: report it as a check, with defaults for the rest.
        loaded = LoadedConfig(config=StockadeConfig(), file=config_file, sources={})
        checks = [Check(name="configuration file", outcome="failed", detail=str(exc),
                        fix=f"stockade config check {config_file}")]  # fmt: skip
    else:
        where = str(loaded.file) if loaded.file else "none (built-in defaults)"
        checks = [Check(name="configuration file", outcome="ok", detail=where)]
    flag = f"--config {config_file}" if config_file else ""
    if checks[0].outcome == "ok":
        checks += run_async(diagnose(loaded, config_flag=flag))
    if as_json:
        echo_json([dataclasses.asdict(check) for check in checks])
    else:
        rows = []
        for check in checks:
            detail = f"{check.detail}\n  fix: {check.fix}" if check.fix else check.detail
            rows.append((_MARK[check.outcome], check.name, detail))
        table(["", "CHECK", "DETAIL"], rows)
    failed = [check for check in checks if check.outcome == "failed"]
    warnings = [check for check in checks if check.outcome == "warning"]
    if not as_json:
        summary = f"{len(failed)} check(s) failed" if failed else "all checks passed"
        click.echo(summary + (f", {len(warnings)} warning(s)" if warnings else ""))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)

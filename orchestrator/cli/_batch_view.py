"""``stockade run --batch FILE``: many runs from one orchestrator, live progress, a summary.

Results go to the results file as each run ends (flushed and synced); a rerun
with the same results file skips the ids that already completed or failed
(``--retry-failed`` runs the failed ones again) and runs the rest, cancelled
ones included. Exit codes: 0 when every run of the file has completed, 1
when any failed (now or before), 130 when the batch was interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import Field

from orchestrator.agent import (
    Agent,
    AgentConfig,
    ApprovalWatch,
    BatchItem,
    BatchProgress,
    BatchResultsFile,
    RunStatus,
    run_batch,
)
from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    echo_json,
    stop_signals,
    table,
)
from orchestrator.cli.metrics import serving_metrics
from orchestrator.config import LoadedConfig
from orchestrator.platform import Platform
from orchestrator.strict import StrictModel

__all__ = ["BatchSummary", "drive_batch", "show_summary"]

_PLAIN_EVERY_S = 5.0
"""How often a progress line is printed when standard error is not a terminal."""
_TTY_EVERY_S = 0.5


class BatchSummary(StrictModel):
    """What one ``stockade run --batch`` did (the ``--json`` document)."""

    input: str
    """The batch file."""
    results: str
    """The results file (one line per run, this invocation's and earlier ones')."""
    items: int
    """Runs in the batch file."""
    skipped: int
    """Runs not started because the results file already had them."""
    runs: int
    """Runs that ended in this invocation."""
    by_status: dict[str, int]
    """This invocation's runs by status."""
    not_complete: list[str] = Field(default_factory=list)
    """Ids of the file whose latest result is not ``complete`` (or that have none)."""
    interrupted: bool
    """Whether the batch was stopped before every run ended (Ctrl-C, SIGTERM)."""
    wall_s: float
    """Wall-clock time of this invocation's runs."""
    runs_per_s: float
    """Runs ended a second."""
    tool_calls: int
    """Tool calls that came back."""
    tool_calls_per_s: float
    """Tool calls a second."""
    exit_code: int
    """0: every run of the file completed; 1: some did not; 130: interrupted."""


class _Ticker:
    """Prints the progress line: redrawn in place on a terminal, else every few seconds."""

    def __init__(self, progress: BatchProgress) -> None:
        self._progress = progress
        self._tty = sys.stderr.isatty()

    def show(self, *, final: bool = False) -> None:
        line = f"batch: {self._progress.line()}"
        if self._tty:
            click.echo(f"\r\x1b[2K{line}", err=True, nl=final)
        else:
            click.echo(line, err=True)

    async def run(self) -> None:
        every = _TTY_EVERY_S if self._tty else _PLAIN_EVERY_S
        while True:
            await asyncio.sleep(every)
            self.show()


async def drive_batch(
    loaded: LoadedConfig,
    config: AgentConfig,
    items: list[BatchItem],
    *,
    batch_file: Path,
    results: BatchResultsFile,
    concurrency: int,
    principal: str,
    retry_failed: bool,
    metrics_port: int | None,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Run the items of ``batch_file`` not finished in ``results``; the summary at the end.

    A first Ctrl-C or SIGTERM stops the batch (no new run, the running ones
    cancelled and recorded); a second one stops waiting for that.
    """
    say = echo or (lambda line: click.echo(line, err=True))
    earlier = await asyncio.to_thread(results.read)
    finished = {RunStatus.COMPLETE} if retry_failed else {RunStatus.COMPLETE, RunStatus.FAILED}
    done = {key for key, result in earlier.items() if result.status in finished}
    todo = [item for item in items if item.id not in done]
    skipped = len(items) - len(todo)
    say(f"results: {results.path}")
    watch = ApprovalWatch()
    counts: Counter[str] = Counter()
    interrupted = False
    async with (
        Platform.open(loaded, approvers=[watch]) as platform,
        serving_metrics(platform.metrics, loaded, metrics_port, command="run-batch"),
        Agent.open(platform, config, approvals=watch) as agent,
    ):
        batch = run_batch(agent, todo, concurrency=concurrency, principal=principal)
        batch.progress.skipped = skipped
        ticker = _Ticker(batch.progress)
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def stop(reason: str) -> None:
            nonlocal interrupted
            if interrupted and main is not None:
                main.cancel()
            interrupted = True
            batch.stop(reason)
            ticker.show()

        signals = stop_signals()
        for number, reason in signals.items():
            loop.add_signal_handler(number, stop, reason)
        ticking = asyncio.create_task(ticker.run())
        try:
            async for result in batch:
                counts[result.status.value] += 1
                await asyncio.to_thread(results.append, result)
        finally:
            ticking.cancel()
            for number in signals:
                loop.remove_signal_handler(number)
            await asyncio.to_thread(results.close)
        ticker.show(final=True)
        progress = batch.progress
        wall_s = progress.elapsed_s()
    latest = await asyncio.to_thread(results.read)
    not_complete = [
        item.id
        for item in items
        if item.id not in latest or latest[item.id].status is not RunStatus.COMPLETE
    ]
    runs = sum(counts.values())
    code = EXIT_INTERRUPTED if interrupted else EXIT_FAILED if not_complete else EXIT_OK
    return BatchSummary(
        input=str(batch_file),
        results=str(results.path),
        items=len(items),
        skipped=skipped,
        runs=runs,
        by_status=dict(counts),
        not_complete=not_complete,
        interrupted=interrupted,
        wall_s=round(wall_s, 3),
        runs_per_s=round(runs / wall_s, 3) if wall_s > 0 else 0.0,
        tool_calls=progress.tool_calls,
        tool_calls_per_s=round(progress.tool_calls_per_s(progress.started_at + wall_s), 3),
        exit_code=code,
    )


def show_summary(summary: BatchSummary, *, as_json: bool) -> None:
    """Print the summary: a table, or (``as_json``) the whole document."""
    if as_json:
        echo_json(summary.model_dump(mode="json"))
        return
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary.by_status.items()))
    rows = [
        ("results", summary.results),
        ("runs", f"{summary.runs} ({statuses or 'none'})"),
        ("skipped", f"{summary.skipped} (already in the results)"),
        ("wall time", f"{summary.wall_s:.1f} s"),
        ("runs/s", f"{summary.runs_per_s:.2f}"),
        ("tool calls", f"{summary.tool_calls} ({summary.tool_calls_per_s:.2f}/s)"),
    ]
    if summary.not_complete:
        shown = ", ".join(summary.not_complete[:10])
        more = len(summary.not_complete) - 10
        rows.append(("not complete", shown + (f" and {more} more" if more > 0 else "")))
    if summary.interrupted:
        rows.append(("interrupted", "yes: rerun the same command to run the rest"))
    table(["BATCH", "SUMMARY"], rows)

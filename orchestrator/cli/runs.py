"""``stockade runs list|show|resume ID``: agent runs, from their records in the state directory.

``resume`` continues a run whose process stopped (killed, the machine
restarted) from its latest checkpoint, under the run's lease: it refuses a
run another live process drives.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from orchestrator.agent import LeaseHeld, list_runs, read_events, read_result, read_state
from orchestrator.cli._common import (
    EXIT_FAILED,
    config_option,
    echo_json,
    json_option,
    load,
    not_found,
    run_async,
    table,
    toolkit_option,
)
from orchestrator.cli._run_view import ProgressView, show_result
from orchestrator.cli.run import EXIT_CODES, agent_config, resume_run
from orchestrator.errors import NotFoundError, UsageError

__all__ = ["runs"]


@click.group()
def runs() -> None:
    """Past agent runs (`runs/` in the state directory)."""


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@runs.command("list")
@config_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Newest runs shown.")  # fmt: skip
def runs_list(config_file: Path | None, as_json: bool, limit: int) -> None:
    """The runs recorded here, newest first."""
    summaries = list_runs(load(config_file).config.state_dir)[:limit]
    if as_json:
        echo_json([asdict(summary) for summary in summaries])
        return
    table(
        ["RUN", "STATUS", "STARTED", "DURATION", "TURNS", "CALLS", "TOKENS", "GOAL", "OUTCOME"],
        [
            (
                s.run_id,
                s.status,
                _when(s.started_at),
                f"{s.duration_s:.1f} s",
                s.iterations,
                s.tool_calls,
                f"{s.tokens:,}",
                _short(s.goal, 50),
                _short(s.outcome, 60),
            )
            for s in summaries
        ],
    )


@runs.command("show")
@config_option
@json_option
@click.argument("run_id")
def runs_show(config_file: Path | None, as_json: bool, run_id: str) -> None:
    """What run RUN_ID did (its log), and how it ended.

    A run without a result (still going, or its process ended) is shown from
    its latest checkpoint; exits 1 then.
    """
    state_dir = load(config_file).config.state_dir
    try:
        result = read_result(state_dir, run_id)
    except NotFoundError as exc:
        raise not_found(str(exc)) from None
    if result is not None:
        if not as_json:
            ProgressView(click.echo).replay(result.log)
            click.echo()
        show_result(result, as_json=as_json)
        return
    state = read_state(state_dir, run_id)
    if as_json:
        echo_json({"state": state.model_dump(mode="json"), "result": None})
    else:
        ProgressView(click.echo).replay(read_events(state_dir, run_id))
        click.echo(
            f"\nno result: the run is {state.status.value} at its latest checkpoint "
            f"(iteration {state.iteration}); if its process stopped, "
            f"`stockade runs resume {run_id}` continues it"
        )
    sys.exit(EXIT_FAILED)


@runs.command("resume")
@config_option
@toolkit_option
@json_option
@click.argument("run_id")
@click.option(
    "--prompt/--no-prompt",
    default=None,
    help="Ask at this terminal when a call needs approval. Default: when stdin is a terminal.",
)
@click.option("--max-iterations", type=click.IntRange(min=1), help="Model turns at most.")
@click.option("--timeout", "run_timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds the run may be worked on, over all its processes.")  # fmt: skip
@click.option("--lease", "lease_s", type=click.FloatRange(min=1, max=3600),
              help="Seconds the run's lease lasts without a heartbeat (default 30).")  # fmt: skip
def runs_resume(
    *,
    config_file: Path | None,
    toolkits: tuple[str, ...],
    as_json: bool,
    run_id: str,
    prompt: bool | None,
    max_iterations: int | None,
    run_timeout_s: float | None,
    lease_s: float | None,
) -> None:
    """Continue run RUN_ID, interrupted when its process stopped, from its latest checkpoint.

    Calls that never reached a sandbox run again (a decision taken on an
    approval meanwhile applies); a call that may have run is not run again
    unless its tool is idempotent, and the model is told its effects are
    unknown. Refused while another live process drives the run. Exits like
    `stockade run`.
    """
    loaded = load(config_file, toolkits=toolkits)
    if not loaded.config.model.base_url or not loaded.config.model.name:
        raise click.UsageError("no model configured: set model.base_url and model.name")
    config = agent_config(
        max_iterations=max_iterations, run_timeout_s=run_timeout_s, lease_s=lease_s
    )
    try:
        result = run_async(
            resume_run(
                loaded,
                config,
                run_id,
                prompt=sys.stdin.isatty() if prompt is None else prompt,
                on_event=ProgressView(),
            )
        )
    except NotFoundError as exc:
        raise not_found(str(exc)) from None
    except (LeaseHeld, UsageError) as exc:
        raise click.UsageError(str(exc)) from None
    show_result(result, as_json=as_json)
    sys.exit(EXIT_CODES[result.status])

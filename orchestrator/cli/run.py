"""``stockade run "GOAL"``: one agent run on the configured platform, with live progress;
``stockade run --batch FILE``: many (``orchestrator/cli/_batch_view.py``)."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import pydantic

from orchestrator.agent import (
    Agent,
    AgentConfig,
    AgentEvent,
    ApprovalWatch,
    BatchResultsFile,
    RunHandle,
    RunResult,
    RunStatus,
    read_batch,
    results_path_for,
)
from orchestrator.approvals import TerminalApprover
from orchestrator.cli._batch_view import drive_batch, show_summary
from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    config_option,
    json_option,
    load,
    run_async,
    stop_signals,
    toolkit_option,
)
from orchestrator.cli._owners import claim_run_id
from orchestrator.cli._run_view import ProgressView, show_result
from orchestrator.cli.metrics import metrics_port_option, serving_metrics
from orchestrator.config import LoadedConfig
from orchestrator.platform import Platform

__all__ = ["EXIT_CODES", "agent_config", "resume_run", "run", "run_goal"]

EXIT_CODES = {
    RunStatus.COMPLETE: EXIT_OK,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CANCELLED: EXIT_INTERRUPTED,
}
"""How a run's end becomes the command's exit code."""


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path once resolved (links followed), or
    one file under two names (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def agent_config(**fields: Any) -> AgentConfig:
    """An :class:`AgentConfig` from the flags that were given (``None``: not given)."""
    try:
        return AgentConfig(**{key: value for key, value in fields.items() if value is not None})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise click.UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


async def run_goal(
    loaded: LoadedConfig,
    config: AgentConfig,
    goal: str,
    *,
    principal: str,
    run_id: str | None = None,
    prompt: bool = False,
    on_event: Callable[[AgentEvent], None] | None = None,
    watch: ApprovalWatch | None = None,
    metrics_port: int | None = None,
    command: str = "run",
) -> RunResult:
    """Open the platform and an agent, run ``goal``; Ctrl-C and SIGTERM cancel the run.

    A first signal cancels the run (recorded as cancelled, sandboxes removed);
    a second one stops waiting for that. ``metrics_port`` (or ``metrics.serve``)
    serves the platform's metrics while the run goes, labelled ``command``.
    """

    async def start(agent: Agent) -> RunHandle:
        return agent.start(goal, principal=principal, run_id=run_id, on_event=on_event)

    return await _drive(
        loaded, config, start, prompt=prompt, watch=watch, metrics_port=metrics_port,
        command=command,
    )  # fmt: skip


async def resume_run(
    loaded: LoadedConfig,
    config: AgentConfig,
    run_id: str,
    *,
    prompt: bool = False,
    on_event: Callable[[AgentEvent], None] | None = None,
    metrics_port: int | None = None,
) -> RunResult:
    """Open the platform and an agent, resume ``run_id`` (see :meth:`Agent.resume`)."""

    async def start(agent: Agent) -> RunHandle:
        return await agent.resume(run_id, on_event=on_event)

    return await _drive(
        loaded, config, start, prompt=prompt, watch=None, metrics_port=metrics_port,
        command="resume",
    )  # fmt: skip


async def _drive(
    loaded: LoadedConfig,
    config: AgentConfig,
    start: Callable[[Agent], Awaitable[RunHandle]],
    *,
    prompt: bool,
    watch: ApprovalWatch | None,
    metrics_port: int | None,
    command: str,
) -> RunResult:
    watch = watch or ApprovalWatch()
    async with (
        Platform.open(loaded, approvers=[watch]) as platform,
        serving_metrics(platform.metrics, loaded, metrics_port, command=command),
    ):
        if prompt:
            watch.add(TerminalApprover(redact_patterns=platform.gateway.policy.redact))
        async with Agent.open(platform, config, approvals=watch) as agent:
            handle = await start(agent)
            main = asyncio.current_task()
            loop = asyncio.get_running_loop()
            stopping: list[str] = []

            def stop(reason: str) -> None:
                if stopping and main is not None:
                    main.cancel()
                stopping.append(reason)
                handle.cancel(reason)

            signals = stop_signals()
            for number, reason in signals.items():
                loop.add_signal_handler(number, stop, reason)
            try:
                return await handle.result()
            finally:
                for number in signals:
                    loop.remove_signal_handler(number)


@click.command("run")
@config_option
@toolkit_option
@json_option
@click.argument("goal", required=False)
@click.option("--batch", "batch_file",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Run each line of this JSON-lines file (id, goal, files).")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1, max=256), default=4, show_default=True,
              help="With --batch: runs at once.")  # fmt: skip
@click.option("--results", "results_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --batch: the results file (default: beside the batch file, "
              "NAME.results.jsonl); ids it has as complete or failed are skipped.")  # fmt: skip
@click.option("--retry-failed", is_flag=True,
              help="With --batch: run again the ids whose result says failed.")  # fmt: skip
@click.option("--model", "model_name", help="Model name (model.name).")
@click.option("--base-url", help="OpenAI-compatible server URL (model.base_url).")
@click.option("--api-key-env", help="Variable holding the API key (model.api_key_env).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Policy file (overrides the configuration).")  # fmt: skip
@click.option("--runtime", type=click.Choice(["runc", "runsc"]),
              help="Runtime of profiles that name none (sandbox.runtime).")  # fmt: skip
@click.option("--approvers", "approvers_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Approvers file: auto rules, webhook (approvals.approvers).")  # fmt: skip
@click.option("--principal", help="Who the run acts for. Default: your user name.")
@click.option("--run-id", help="Name of the run (its workspace and log); refused when another "
              "principal used it first (over the HTTP API too). Default: a fresh id.")  # fmt: skip
@click.option(
    "--prompt/--no-prompt",
    default=None,
    help="Ask at this terminal when a call needs approval. Default: when stdin is a terminal.",
)
@click.option("--max-iterations", type=click.IntRange(min=1), help="Model turns at most.")
@click.option("--max-tool-calls", type=click.IntRange(min=1), help="Tool calls run per turn.")
@click.option("--timeout", "run_timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds the run may be worked on (downtime not counted).")  # fmt: skip
@click.option("--deadline", "deadline_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds from its start the run may take, downtime included.")  # fmt: skip
@click.option("--lease", "lease_s", type=click.FloatRange(min=1, max=3600),
              help="Seconds the run's lease lasts without a heartbeat (default 30).")  # fmt: skip
@click.option("--context-budget", type=click.IntRange(min=500), help="Context budget in tokens.")
@click.option("--reflection/--no-reflection", default=None, help="Check final answers.")
@click.option("--memory/--no-memory", default=None, help="Recall and remember (memory.enabled).")
@metrics_port_option
def run(  # click passes every option by keyword
    *,
    config_file: Path | None,
    toolkits: tuple[str, ...],
    as_json: bool,
    goal: str | None,
    batch_file: Path | None,
    concurrency: int,
    results_file: Path | None,
    retry_failed: bool,
    model_name: str | None,
    base_url: str | None,
    api_key_env: str | None,
    policy_path: Path | None,
    runtime: str | None,
    approvers_path: Path | None,
    principal: str | None,
    run_id: str | None,
    prompt: bool | None,
    max_iterations: int | None,
    max_tool_calls: int | None,
    run_timeout_s: float | None,
    deadline_s: float | None,
    lease_s: float | None,
    context_budget: int | None,
    reflection: bool | None,
    memory: bool | None,
    metrics_port: int | None,
) -> None:
    """Run an agent on GOAL: the model plans, every tool call goes through the gateway.

    Progress goes to standard error; the final answer and a summary table (or,
    with --json, the whole run result) to standard output. Exits 0 when the
    run completed, 1 when it failed, 2 when --run-id is already used or another
    principal owns it, 130 when it was interrupted or cancelled. Example:

        stockade run "Write primes.txt with the primes below 100" --base-url \\
            http://127.0.0.1:11434/v1 --model qwen2.5:7b

    With --batch FILE (one JSON object a line: id, goal, optional files and
    principal) the runs go CONCURRENCY at once, one result line each in the
    results file as it ends, a summary at the end; exits 0 when every run of
    the file completed, 1 when any failed, 2 when the file is refused, 130
    when interrupted. Rerun the same command to finish an interrupted batch.
    """
    if (goal is None) == (batch_file is None):
        raise click.UsageError("give a GOAL or --batch FILE (one of the two)")
    if batch_file is not None and (run_id is not None or prompt):
        raise click.UsageError("--run-id and --prompt are for one run, not --batch")
    if batch_file is not None and results_file is not None and _same_file(batch_file, results_file):
        # The results are appended: they would land among the batch's own lines, and the
        # next run would refuse the file (a result is not an item).
        raise click.UsageError(
            f"--results {results_file} is the batch file {batch_file}: the results would be "
            "appended to it. Name another file, or leave --results out for "
            f"{results_path_for(batch_file)}"
        )
    items = read_batch(batch_file) if batch_file is not None else []
    loaded = load(
        config_file,
        toolkits=toolkits,
        policy=policy_path,
        **{
            "model.name": model_name,
            "model.base_url": base_url,
            "model.api_key_env": api_key_env,
            "sandbox.runtime": runtime,
            "approvals.approvers": approvers_path,
            "memory.enabled": memory,
        },
    )
    if not loaded.config.model.base_url or not loaded.config.model.name:
        raise click.UsageError(
            "no model configured: set model.base_url and model.name in stockade.yaml, or pass "
            "--base-url and --model (`stockade demo` runs a scripted model instead)"
        )
    config = agent_config(
        max_iterations=max_iterations,
        max_tool_calls_per_iteration=max_tool_calls,
        run_timeout_s=run_timeout_s,
        deadline_s=deadline_s,
        lease_s=lease_s,
        context_budget_tokens=context_budget,
        reflection=reflection,
    )
    if batch_file is not None:
        summary = run_async(
            drive_batch(
                loaded,
                config,
                items,
                batch_file=batch_file,
                results=BatchResultsFile(results_file or results_path_for(batch_file)),
                concurrency=concurrency,
                principal=principal or getpass.getuser(),
                retry_failed=retry_failed,
                metrics_port=metrics_port,
            )
        )
        show_summary(summary, as_json=as_json)
        sys.exit(summary.exit_code)
    assert goal is not None  # checked above
    who = principal or getpass.getuser()
    if run_id is not None:
        # The HTTP API's rule, checked before the engine is reached: the first principal
        # to use a run id owns it, and this run is a use of it.
        claim_run_id(loaded.config, run_id, who)
    result = run_async(
        run_goal(
            loaded,
            config,
            goal,
            principal=who,
            run_id=run_id,
            prompt=sys.stdin.isatty() if prompt is None else prompt,
            on_event=ProgressView(),
            metrics_port=metrics_port,
        )
    )
    show_result(result, as_json=as_json)
    sys.exit(EXIT_CODES[result.status])

"""``stockade demo``: the README's main job — an agent at work on this machine.

With no model configured it replays a recorded, scripted model session (see
``_demo_script``) through the real platform: real containers, the shipped
default policy, approvals decided by rules (or at the prompt), a rate limit,
memory recalled in a second run. With a model configured (``model.base_url``,
or ``--base-url``) it runs a real goal instead.
"""

from __future__ import annotations

import getpass
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator.agent import Agent, AgentConfig, ApprovalWatch, RunResult
from orchestrator.approvals import AutoApprover, TerminalApprover
from orchestrator.audit import verify
from orchestrator.cli._common import EXIT_FAILED, EXIT_OK, config_option, load, run_async, table
from orchestrator.cli._demo_script import (
    DEMO_RULES,
    FIRST_GOAL,
    SECOND_GOAL,
    first_session,
    second_session,
)
from orchestrator.cli._run_view import ProgressView, show_result, summary_rows
from orchestrator.cli.metrics import metrics_port_option, serving_metrics
from orchestrator.cli.run import EXIT_CODES, run_goal
from orchestrator.config import ApprovalsSettings, AuditSettings, LoadedConfig, ModelSettings
from orchestrator.display import for_display
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer

__all__ = ["demo"]

REAL_GOAL = (
    "Write a Python program primes.py that prints the prime numbers below 100, run it, save "
    "its output to primes.txt in the workspace, then read primes.txt back and report how many "
    "primes it lists."
)

_BANNER = """\
Stockade demo: an agent run on this machine.
No model is configured, so the model's side is a RECORDED, SCRIPTED SESSION (canned
replies served by orchestrator.testing.ScriptedModelServer on 127.0.0.1). Everything
else is real: every tool call goes through the gateway under the shipped default
policy and runs in its own throwaway container; approvals, rate limits, the audit log
and memory are the platform's own. Configure model.base_url (or pass --base-url and
--model) to watch a real model instead."""


def _workspace_listing(path: str | None) -> str:
    if path is None or not Path(path).is_dir():
        return "(none)"
    root = Path(path)
    entries = []
    for entry in sorted(root.iterdir()):
        if entry.name == ".stockade":
            continue  # the platform's own (python.run's kept namespace), not the agent's work
        if entry.is_dir():
            entries.append(
                f"{entry.name}/ ({sum(1 for p in entry.rglob('*') if p.is_file())} files)"
            )
        else:
            entries.append(entry.name)
    return "  ".join(entries) or "(empty)"


def _summary(result: RunResult, echo: Callable[[str], None]) -> None:
    # The model's answer and the names its calls chose: shown, never acted on.
    if result.answer:
        echo(for_display(f"answer: {result.answer.strip()}"))
    echo(for_display(f"workspace: {_workspace_listing(result.workspace)}"))
    # The demo's state directory goes at the end: its paths would point nowhere.
    table(
        ["RUN", "SUMMARY"],
        [row for row in summary_rows(result) if row[0] not in {"workspace", "log"}],
    )


async def _recorded(
    loaded: LoadedConfig, *, prompt: bool, metrics_port: int | None, echo: Callable[[str], None]
) -> bool:
    """The scripted session, two runs, in a state directory of its own; True if both completed."""
    echo(_BANNER)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="stockade-demo-") as state:
        async with ScriptedModelServer(model="recorded-demo-model") as server:
            settings = loaded.config.model_copy(
                update={
                    "state_dir": Path(state),
                    "policy": None,  # the shipped default policy
                    "workspaces_dir": None,
                    "audit": AuditSettings(),
                    "approvals": ApprovalsSettings(),
                    # A variable nobody sets: no real key is ever sent to the scripted server.
                    "model": ModelSettings(
                        base_url=server.base_url,
                        name=server.model,
                        api_key_env="STOCKADE_DEMO_NO_KEY",
                        timeout_s=30,
                    ),
                    "memory": loaded.config.memory.model_copy(update={"enabled": True}),
                }
            )
            demo = LoadedConfig(config=settings, file=loaded.file, sources=loaded.sources)
            watch = ApprovalWatch() if prompt else ApprovalWatch([AutoApprover(DEMO_RULES)])
            agent_config = AgentConfig(max_tool_calls_per_iteration=24, run_timeout_s=300)
            async with (
                Platform.open(demo, approvers=[watch], warm=True) as platform,
                serving_metrics(platform.metrics, loaded, metrics_port, command="demo"),
            ):
                if prompt:
                    watch.add(TerminalApprover(redact_patterns=platform.gateway.policy.redact))
                async with Agent.open(platform, agent_config, approvals=watch) as agent:
                    runs = ((FIRST_GOAL, first_session()), (SECOND_GOAL, second_session()))
                    for number, (goal, session) in enumerate(runs, start=1):
                        server.extend(*session)
                        echo(f"\n=== run {number} ===")
                        result = await agent.run(
                            goal, principal="demo", on_event=ProgressView(echo)
                        )
                        echo("")
                        _summary(result, echo)
                        results.append(result)
                report = verify(platform.config.audit_path)
                echo(
                    f"\naudit log: {report.records} hash-chained records, chain "
                    f"{'intact' if report.ok else 'BROKEN'}"
                )
    echo("done: every sandbox removed, the demo's state directory deleted")
    return len(results) == 2 and all(result.success for result in results)


@click.command()
@config_option
@click.option("--base-url", help="An OpenAI-compatible server: run a real model (model.base_url).")
@click.option("--model", "model_name", help="The model's name (model.name).")
@click.option("--goal", default=REAL_GOAL, show_default=False,
              help="With a real model: the goal (default: a small coding task).")  # fmt: skip
@click.option("--prompt", is_flag=True,
              help="Decide approvals at this terminal instead of by the demo's rules.")  # fmt: skip
@metrics_port_option
def demo(  # click passes every option by keyword
    *,
    config_file: Path | None,
    base_url: str | None,
    model_name: str | None,
    goal: str,
    prompt: bool,
    metrics_port: int | None,
) -> None:
    """Watch an agent work: every tool call through the gateway, in its own container.

    Without a model configured, a recorded scripted session shows the platform
    (parallel calls, the default policy, approvals, a rate limit, reflection,
    memory across runs); with one, a real goal is run. Exits 0 when the runs
    completed, 1 otherwise.
    """
    flags: dict[str, Any] = {"model.base_url": base_url, "model.name": model_name}
    loaded = load(config_file, **flags)
    if not loaded.config.model.base_url:
        recorded = _recorded(loaded, prompt=prompt, metrics_port=metrics_port, echo=click.echo)
        completed = run_async(recorded)
        sys.exit(EXIT_OK if completed else EXIT_FAILED)
    if not loaded.config.model.name:
        raise click.UsageError("name the model: model.name in stockade.yaml, or --model")
    result = run_async(
        run_goal(
            loaded,
            AgentConfig(),
            goal,
            principal=getpass.getuser(),
            prompt=prompt or sys.stdin.isatty(),
            on_event=ProgressView(click.echo),
            metrics_port=metrics_port,
            command="demo",
        )
    )
    click.echo("")
    show_result(result, as_json=False)
    sys.exit(EXIT_CODES[result.status])

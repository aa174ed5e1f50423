"""``stockade demo``: a tour of the sandbox layer and the gateway on the local engine."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from orchestrator.approvals import ApprovalStore, AutoApprovalRule, AutoApprover
from orchestrator.audit import AuditLog, verify
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.paths import shipped_policies_dir
from orchestrator.policy import load_policy
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry, ToolResult

__all__ = ["run_demo"]

# Every process forks for ever: only the pids limit and the deadline stop it.
_FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
)
_MEMORY_BOMB = "x = []\nwhile True:\n    x.append(bytearray(16 * 2**20))"


def _line(result: ExecResult) -> str:
    output = (result.stdout or result.message).strip().replace("\n", " | ")
    return f"[{result.status.value}, {result.duration_s * 1000:.1f} ms] {output[:110]}"


async def run_demo(
    client: docker.DockerClient, home: Path, *, calls: int, echo: Callable[[str], None]
) -> None:
    """Run the tour, printing each step."""
    profile = SandboxProfile(pool_size=2, timeout_s=10)
    workspaces = WorkspaceManager(home / "workspaces")
    run_id = f"demo-{os.getpid()}"
    async with DockerBackend(client, profiles=[profile]) as backend:
        echo("warming the pool…")
        await backend.wait_warm(profile)

        async def call(
            *argv: str, deadline_s: float | None = None, workspace: bool = False
        ) -> ExecResult:
            return await backend.execute(
                ExecRequest(
                    argv=argv,
                    timeout_s=deadline_s,
                    workspace=workspaces.open(run_id) if workspace else None,
                ),
                profile,
            )

        echo(
            "1. who am I inside? "
            + _line(
                await call(
                    "sh",
                    "-c",
                    "id -u; grep CapEff /proc/self/status; ls /sys/class/net; "
                    "touch /etc/x 2>&1 | tail -c 40",
                )
            )
        )
        echo(
            "2. write a file in the run's workspace: "
            + _line(
                await call(
                    "sh",
                    "-c",
                    "echo 'kept between calls' > notes.txt; echo written",
                    workspace=True,
                )
            )
        )
        echo(
            "   read it back in a new container:   "
            + _line(await call("cat", "notes.txt", workspace=True))
        )
        echo(
            "3. fork bomb (3 s deadline):  "
            + _line(await call("python3", "-c", _FORK_BOMB, deadline_s=3))
        )
        echo("4. memory bomb:               " + _line(await call("python3", "-c", _MEMORY_BOMB)))
        latencies: list[float] = []
        for _ in range(calls):
            await backend.wait_warm(profile)
            began = time.perf_counter()
            await call("true")
            latencies.append((time.perf_counter() - began) * 1000)
        latencies.sort()
        echo(
            f"5. {calls} warm-pool calls: p50 {statistics.median(latencies):.1f} ms, "
            f"max {latencies[-1]:.1f} ms (each in its own container, destroyed after)"
        )
        registry = ToolRegistry()
        for toolkit in ("toolkits.python", "toolkits.files", "toolkits.shell"):
            registry.load(toolkit)
        with tempfile.TemporaryDirectory(prefix="stockade-demo-") as state:
            await _gateway_tour(
                ToolExecutor(registry, backend, workspaces=workspaces), Path(state), run_id, echo
            )
    workspaces.close(run_id)
    echo("done: pool destroyed, workspace removed, no container left behind")


async def _gateway_tour(
    executor: ToolExecutor, state: Path, run_id: str, echo: Callable[[str], None]
) -> None:
    """Tool calls through the gateway under the shipped default policy."""
    policy = load_policy(shipped_policies_dir() / "default.yaml")
    no_wiping = AutoApprovalRule(
        name="demo-no-wiping", tools=["shell.run"], decision="deny", note="not in the demo"
    )
    audit_path = state / "audit.jsonl"
    gateway = Gateway(
        executor,
        policy,
        AuditLog(audit_path, redact_patterns=policy.redact),
        approvals=ApprovalGate(ApprovalStore(state / "approvals.db"), [AutoApprover([no_wiping])]),
    )

    async def call(number: int, name: str, **arguments: object) -> ToolResult:
        return await gateway.call(
            ToolCall(id=f"demo-{number}", name=name, arguments=arguments, run_id=run_id)
        )

    code = "import numpy as np\nprint(np.linalg.norm([3, 4]))"
    answer = await call(6, "python.run", code=code)
    echo(f"6. tool call python.run (numpy): [{answer.status.value}] {answer.output}")
    refused = await call(7, "files.read", path="../../etc/passwd")
    echo(
        f"7. files.read outside the workspace: [{refused.status.value}] "
        f"{(refused.error or '').splitlines()[0]}"
    )
    wipe = await call(8, "shell.run", command="rm -rf ./*")
    echo(f"8. shell.run 'rm -rf ./*' needs approval: [{wipe.status.value}] {wipe.error}")
    unknown = await call(9, "system.reboot")
    echo(f"9. a tool that does not exist: [{unknown.status.value}] {unknown.error}")
    report = verify(audit_path)
    echo(
        f"10. audit log: {report.records} hash-chained records, "
        f"chain {'intact' if report.ok else 'BROKEN'}"
    )

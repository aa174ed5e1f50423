"""``stockade demo``: a tour of the sandbox layer and the gateway, on the assembled platform."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.approvals import AutoApprovalRule, AutoApprover
from orchestrator.audit import verify
from orchestrator.config import ApprovalsSettings, AuditSettings, LoadedConfig
from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.tools import ToolCall, ToolResult

__all__ = ["run_demo"]

# Every process forks for ever: only the pids limit and the deadline stop it.
_FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
)
_MEMORY_BOMB = "x = []\nwhile True:\n    x.append(bytearray(16 * 2**20))"
_RUN = f"demo-{os.getpid()}"


def _line(result: ExecResult) -> str:
    output = (result.stdout or result.message).strip().replace("\n", " | ")
    return f"[{result.status.value}, {result.duration_s * 1000:.1f} ms] {output[:110]}"


async def run_demo(loaded: LoadedConfig, *, calls: int, echo: Callable[[str], None]) -> None:
    """Run the tour on the platform ``loaded`` configures, printing each step.

    The tour keeps its state (workspaces, audit log, approvals) in a temporary
    directory and uses the shipped default policy, so it shows the same thing
    on every machine and leaves nothing behind.
    """
    no_wiping = AutoApprovalRule(
        name="demo-no-wiping", tools=["shell.run"], decision="deny", note="not in the demo"
    )
    with tempfile.TemporaryDirectory(prefix="stockade-demo-") as state:
        settings = loaded.config.model_copy(
            update={
                "state_dir": Path(state),
                "policy": None,
                "workspaces_dir": None,
                "audit": AuditSettings(),
                "approvals": ApprovalsSettings(),
            }
        )
        demo = LoadedConfig(config=settings, file=loaded.file, sources=loaded.sources)
        async with Platform.open(demo, approvers=[AutoApprover([no_wiping])]) as platform:
            await _sandbox_tour(platform, calls=calls, echo=echo)
            await _gateway_tour(platform, echo)
    echo("done: pools destroyed, workspace removed, no container left behind")


async def _sandbox_tour(platform: Platform, *, calls: int, echo: Callable[[str], None]) -> None:
    """Raw sandbox calls: what a container allows, and what it contains."""
    profile = platform.profiles["default"].model_copy(update={"pool_size": 2, "timeout_s": 10.0})
    backend = platform.sandbox
    echo("warming the pool…")
    if isinstance(backend, DockerBackend):
        await backend.wait_warm(profile)

    async def call(
        *argv: str, deadline_s: float | None = None, workspace: bool = False
    ) -> ExecResult:
        return await backend.execute(
            ExecRequest(
                argv=argv,
                timeout_s=deadline_s,
                workspace=platform.workspaces.open(_RUN) if workspace else None,
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
                "sh", "-c", "echo 'kept between calls' > notes.txt; echo written", workspace=True
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
        if isinstance(backend, DockerBackend):
            await backend.wait_warm(profile)
        began = time.perf_counter()
        await call("true")
        latencies.append((time.perf_counter() - began) * 1000)
    latencies.sort()
    echo(
        f"5. {calls} warm-pool calls: p50 {statistics.median(latencies):.1f} ms, "
        f"max {latencies[-1]:.1f} ms (each in its own container, destroyed after)"
    )


async def _gateway_tour(platform: Platform, echo: Callable[[str], None]) -> None:
    """Tool calls through the gateway under the shipped default policy."""

    async def call(number: int, name: str, **arguments: object) -> ToolResult:
        return await platform.gateway.call(
            ToolCall(id=f"demo-{number}", name=name, arguments=arguments, run_id=_RUN)
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
    platform.workspaces.close(_RUN)
    report = verify(platform.config.audit_path)
    echo(
        f"10. audit log: {report.records} hash-chained records, "
        f"chain {'intact' if report.ok else 'BROKEN'}"
    )

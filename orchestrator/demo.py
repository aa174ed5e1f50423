"""``stockade demo``: a tour of the sandbox layer on the local engine."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import docker

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolCall, ToolExecutor, ToolRegistry

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
        for toolkit in ("toolkits.python", "toolkits.files"):
            registry.load(toolkit)
        tools = ToolExecutor(registry, backend, workspaces=workspaces)
        code = "import numpy as np\nprint(np.linalg.norm([3, 4]))"
        answer = await tools.execute(
            ToolCall(id="demo", name="python.run", arguments={"code": code}, run_id=run_id)
        )
        echo(f"6. tool call python.run (numpy): [{answer.status.value}] {answer.output}")
        refused = await tools.execute(
            ToolCall(
                id="demo", name="files.read", arguments={"path": "../../etc/passwd"}, run_id=run_id
            )
        )
        echo(
            f"7. files.read outside the workspace: [{refused.status.value}] "
            f"{(refused.error or '').splitlines()[0]}"
        )
    workspaces.close(run_id)
    echo("done: pool destroyed, workspace removed, no container left behind")

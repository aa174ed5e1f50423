"""python.run and shell.run results a model can act on, under runc and gVisor.

How the program ended is said in words with the limit that ended it; output
is capped inside the tool (head and tail kept); the call returns when the
program's main process exits, and what it left running is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gateway import Gateway
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolResult, ToolStatus
from stockade_sdk import ToolError
from stockade_sdk.process import run_captured, run_python

MEMORY_MB = 256
PIDS = 64


@pytest.fixture
async def tools(
    images: ImageBuilder, no_leaks: None, runtime: str, tmp_path: Path
) -> AsyncIterator[Gateway]:
    profile = {"memory_mb": MEMORY_MB, "pids": PIDS, "pool_size": 1}
    async with open_test_platform(
        tmp_path,
        toolkits=("toolkits.python", "toolkits.shell"),
        runtime=runtime,
        profiles={"default": profile},
    ) as platform:
        yield platform.gateway


async def call(tools: Gateway, name: str, **arguments: object) -> ToolResult:
    return await tools.call(ToolCall(id="t", name=name, arguments=json.dumps(arguments)))


def output_of(result: ToolResult) -> dict[str, Any]:
    assert result.status is ToolStatus.OK, result
    output: dict[str, Any] = json.loads(result.output)
    return output


@pytest.mark.docker
async def test_out_of_memory_says_so_with_the_limit(tools: Gateway, runtime: str) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 2**20))"
    result = await call(tools, "python.run", code=code)
    if runtime == "runc":
        # The kernel kills the snippet; the tool reads the cgroup's verdict.
        output = output_of(result)
        assert output["killed"] == f"out of memory (limit {MEMORY_MB} MiB)", output
        assert output["exit_code"] is None
    else:
        # gVisor has no OOM killer of its own: the host kills the whole
        # sandbox, so the host says it.
        assert result.status is ToolStatus.OOM_KILLED, result
        assert f"out of memory and was killed (limit {MEMORY_MB} MiB)" in (result.error or "")


@pytest.mark.docker
async def test_a_flood_of_output_is_capped_inside_the_tool(tools: Gateway) -> None:
    # 2 GiB: buffered whole, it would not fit the sandbox's memory eight times over.
    code = (
        "import sys\nout = sys.stdout.buffer\nout.write(b'START\\n')\n"
        "chunk = b'x' * (1 << 20)\nfor _ in range(2048):\n    out.write(chunk)\n"
        # Assigned: a trailing expression's value would be shown, as a REPL shows it.
        "_ = out.write(b'\\nTHE END\\n')"
    )
    result = await call(tools, "python.run", code=code)
    output = output_of(result)
    assert output["truncated"] is True
    assert output["stdout_bytes"] == 2**31 + len("START\n\nTHE END\n")
    assert output["stderr_bytes"] == 0
    stdout = output["stdout"]
    assert stdout.startswith("START\nxxx") and stdout.endswith("xxx\nTHE END\n")
    assert "bytes omitted" in stdout
    assert len(result.output) < 100_000, "the model gets the head and the tail, not the flood"
    assert not result.truncated, "the tool's own result fits the sandbox's output cap"


@pytest.mark.docker
async def test_a_background_server_does_not_hold_the_call(tools: Gateway) -> None:
    result = await call(
        tools,
        "shell.run",
        command="python3 -m http.server 8000 --bind 127.0.0.1 & echo started",
        timeout_s=10,
    )
    output = output_of(result)
    assert output["exit_code"] == 0
    assert output["stdout"].startswith("started")
    assert "http.server" in output["left_behind"], output
    assert result.duration_s < 5, "the call returns when the command's main process exits"


@pytest.mark.docker
async def test_a_daemonised_child_does_not_hold_the_call(tools: Gateway) -> None:
    # The classic double fork: the parent reaps the first child, so that exactly
    # one process (the daemon) is left, however slowly the machine runs.
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent done')\n"
    )
    result = await call(tools, "python.run", code=code, timeout_s=10)
    output = output_of(result)
    assert output["stdout"] == "parent done\n"
    assert output["exit_code"] == 0
    assert output["left_behind"].startswith("killed 1 process the program left running"), output
    assert result.duration_s < 5


@pytest.mark.docker
async def test_a_signal_is_named(tools: Gateway) -> None:
    code = "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)"
    output = output_of(await call(tools, "python.run", code=code))
    assert output["killed"] == "signal 15 (SIGTERM)"
    assert output["exit_code"] is None
    assert output["stdout"] == "before\n"


@pytest.mark.docker
async def test_its_own_timeout_is_named(tools: Gateway) -> None:
    result = await call(tools, "shell.run", command="echo waiting; sleep 30", timeout_s=1)
    output = output_of(result)
    assert output["killed"] == "timed out after 1 s"
    assert output["exit_code"] is None
    assert output["stdout"] == "waiting\n"
    assert result.duration_s < 5


@pytest.mark.docker
async def test_the_process_limit_is_named(tools: Gateway, runtime: str) -> None:
    # Threads count against the limit like processes, and cost little memory:
    # under gVisor, forked interpreters would exhaust the sandbox's memory first.
    code = (
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    print(started)\n"
        "    raise\n"
    )
    output = output_of(await call(tools, "python.run", code=code, timeout_s=15))
    assert output["exit_code"] == 1
    assert "can't start new thread" in output["stderr"]
    assert int(output["stdout"]) < PIDS
    limit = f"the process limit ({PIDS} processes and threads)"
    if runtime == "runc":
        assert any(note.startswith(f"{limit} was reached") for note in output["notes"]), output
    else:
        # gVisor counts no refusals anywhere the tool can read.
        assert f"{limit} was probably reached (can't start new thread)" in output["notes"]


@pytest.mark.docker
async def test_code_the_compiler_refuses_is_said_in_stderr(tools: Gateway) -> None:
    """A NUL byte (ValueError) or nesting too deep for the parser (MemoryError) ended the
    snippet with exit code 1, an empty stderr and (with a run) "not saved: the snippet ended
    before"; bash cannot take a NUL: posix_spawn raised ValueError, a traceback."""
    for code, said in [
        ("print(1)\0", "ValueError: source code string cannot contain null bytes"),
        ("x = " + "-" * 150_000 + "1", "MemoryError"),
    ]:
        output = output_of(await call(tools, "python.run", code=code))
        assert (output["exit_code"], output["stderr"]) == (1, said + "\n"), output
    shell = await call(tools, "shell.run", command="echo a\0b")
    assert shell.status is ToolStatus.ERROR, shell
    assert shell.error == "command: a NUL character cannot be passed to bash"


def test_outside_a_sandbox_only_the_programs_own_processes_are_killed() -> None:
    # On a developer's machine every other process of the user is in sight:
    # only what is still in the program's session may go.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = time.monotonic()
        result = run_captured(["sh", "-c", "sleep 60 & echo started"], 10)
        assert time.monotonic() - started < 5
        assert result["stdout"] == "started\n" and result["exit_code"] == 0
        assert str(result["left_behind"]).startswith(
            "killed 1 process the program left running: sleep 60"
        )
        assert bystander.poll() is None, "a process the program did not start was killed"
        os.kill(bystander.pid, 0)
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("timeout_s", [1e12, 1e300, float("inf")])
def test_a_timeout_longer_than_any_wait_runs_the_program(timeout_s: float) -> None:
    """A model's "no timeout" (1e12 s) made poll() raise OverflowError: a traceback."""
    assert run_captured(["echo", "hi"], timeout_s)["stdout"] == "hi\n"
    assert run_python("print(6 * 7)", timeout_s)["stdout"] == "42\n"


@pytest.mark.parametrize("timeout_s", [float("nan"), 0.0, -5.0])
def test_a_timeout_no_clock_can_wait_is_the_models_mistake(timeout_s: float) -> None:
    """NaN made poll() raise ValueError (a traceback); zero or less ran nothing and said
    "timed out after -5 s"."""
    expected = f"timeout_s must be a positive number of seconds, got {timeout_s!r}"
    runs: list[Callable[[], object]] = [
        lambda: run_captured(["true"], timeout_s),
        lambda: run_python("1", timeout_s),
    ]
    for run in runs:
        with pytest.raises(ToolError) as raised:
            run()
        assert str(raised.value) == expected

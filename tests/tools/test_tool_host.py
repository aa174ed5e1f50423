"""The warm tool host, for real under runc and gVisor: fast, faithful, and no stronger than a tool.

A pooled tools container has the SDK's tool host running (forked from the
runner), the SDK and the toolkits imported, before its call arrives; ``python.run`` forks the
snippet from it. These tests check that calls really take that path, that a
snippet behaves as under ``python3 -c``, that the host serves one call only,
and that what the tool runs can reach neither the host's nor the runner's
memory.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolStatus
from stockade_sdk.run import ENTRY_ARGV

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]


@pytest.fixture
async def platform(
    images: ImageBuilder, no_leaks: None, runtime: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    async with open_test_platform(
        tmp_path,
        toolkits=("toolkits.files", "toolkits.python"),
        runtime=runtime,
        profiles={"default": {"pool_size": 1}},
    ) as opened:
        yield opened


async def python(platform: Platform, code: str, run_id: str | None = None) -> dict[str, Any]:
    result = await platform.gateway.call(
        ToolCall(
            id="t", name="python.run", arguments={"code": textwrap.dedent(code)}, run_id=run_id
        )
    )
    assert result.status is ToolStatus.OK, result
    output: dict[str, Any] = json.loads(result.output)
    return output


def findings(output: dict[str, Any]) -> dict[str, Any]:
    """The snippet's report: the last line of its stdout, as JSON."""
    assert output["exit_code"] == 0, output
    found: dict[str, Any] = json.loads(output["stdout"].splitlines()[-1])
    return found


async def test_a_snippet_is_forked_from_the_warm_host(platform: Platform) -> None:
    output = await python(
        platform,
        """
        import json, os, sys
        host = os.getppid()
        command = open(f"/proc/{host}/cmdline", "rb").read().split(b"\\0")
        print(json.dumps({
            "host": b" ".join(command).decode().strip(), "host pid": host > 1,
            "host's parent": open(f"/proc/{host}/stat").read().rsplit(")", 1)[1].split()[1],
            "preloaded": "toolkits.files" in sys.modules,
            "argv": sys.argv, "path0": sys.path[0], "name": __name__,
            "main": sys.modules["__main__"].__dict__ is globals(),
            "stdin": sys.stdin.read(), "cwd": os.getcwd(),
        }))
        """,
    )
    assert findings(output) == {
        # The runner forked the host (no interpreter of its own): its command line is pid 1's.
        "host": "python3 -I -S /opt/stockade/runner.pyc --tool-host /opt/stockade/lib",
        "host pid": True,
        "host's parent": "1",
        "preloaded": True,  # the toolkits were imported before the call
        "argv": ["-c"],
        "path0": "",
        "name": "__main__",
        "main": True,
        "stdin": "",
        "cwd": "/workspace",
    }


async def test_a_snippet_runs_in_a_process_forked_before_its_call(platform: Platform) -> None:
    # While its container waits in the pool the host forks the next
    # snippet's process (stockade_sdk._spare): the call does not wait for a
    # fork of the loaded host (10-16 ms and as much again under gVisor).
    await python(platform, "pass")  # the first call starts the pool
    assert isinstance(platform.sandbox, DockerBackend)
    # The pooled container is ready, and its host forks the spare once it
    # said so; the wait after gives that fork time to be over.
    await platform.sandbox.wait_warm(platform.profiles["default"])
    await asyncio.sleep(0.5)
    began = time.monotonic()
    output = await python(
        platform,
        """
        import json, os, time
        stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started = int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: since boot
        print(json.dumps({"age": time.clock_gettime(time.CLOCK_BOOTTIME) - started}))
        """,
    )
    took = time.monotonic() - began
    # Older than the whole call as the gateway saw it: the process existed
    # before the call was made (a fork at call time would be younger).
    assert findings(output)["age"] > took, (output, took)


async def test_a_snippet_ends_as_the_interpreter_would(platform: Platform) -> None:
    output = await python(
        platform,
        """
        import atexit, threading, time
        from multiprocessing import Pool
        def square(x):
            return x * x
        if __name__ == "__main__":
            with Pool(2) as pool:
                print(pool.map(square, range(4)), flush=True)
            atexit.register(print, "atexit ran")
            threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined"))).start()
        """,
    )
    assert output["stdout"] == "[0, 1, 4, 9]\nthread joined\natexit ran\n", output
    exited = await python(platform, "import sys\nprint('bye', flush=True)\nsys.exit(3)")
    assert (exited["stdout"], exited["exit_code"]) == ("bye\n", 3)
    message = await python(platform, "raise SystemExit('no luck')")
    assert (message["stderr"], message["exit_code"]) == ("no luck\n", 1)
    interrupted = await python(platform, "raise KeyboardInterrupt")
    assert interrupted["killed"] == "signal 2 (SIGINT)", interrupted
    assert interrupted["stderr"].endswith("KeyboardInterrupt\n")
    syntax = await python(platform, "x =")
    assert syntax["stderr"].startswith('  File "<string>", line 1'), syntax


# What a Python program can see of how its interpreter started, apart from
# the command line and sys.flags (the host's are the runner's; a snippet's
# sys.argv and sys.path[0] are set as under -c).
PROBE = """
import builtins, json, os, signal, sys, warnings
def stream(s):
    buffer = getattr(s, "buffer", None)
    return [s.encoding, s.errors, s.line_buffering, s.write_through, repr(s.newlines),
            type(buffer).__name__, getattr(buffer, "name", None), s.fileno()]
print(json.dumps({
    "streams": [stream(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
    "same dunder streams": [sys.__stdin__ is sys.stdin, sys.__stdout__ is sys.stdout],
    "path": sys.path[1:], "site builtins": sorted(
        n for n in ("exit", "quit", "help", "copyright", "credits", "license")
        if hasattr(builtins, n)),
    "signals": {int(s): str(signal.getsignal(s)) for s in signal.valid_signals()
                if s not in (signal.SIGKILL, signal.SIGSTOP)},
    "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "umask": os.umask(0o22), "bytecode": sys.dont_write_bytecode,
    "warnings": [str(f) for f in warnings.filters], "recursion": sys.getrecursionlimit(),
    "environment": dict(os.environ), "cwd": os.getcwd(), "session leader": os.getsid(0) == os.getpid(),
}))
"""


async def test_a_snippet_sees_the_interpreter_python3_c_would_start(platform: Platform) -> None:
    # The reference: python3 -c started from the snippet itself, in the same
    # container and environment, its own session and stdin from /dev/null.
    output = await python(
        platform,
        f"""
        import os, subprocess, sys
        probe = {PROBE!r}
        exec(probe)
        subprocess.run(
            ["python3", "-c", probe], stdin=subprocess.DEVNULL, start_new_session=True, check=True
        ).check_returncode()
        """,
    )
    assert output["exit_code"] == 0, output
    forked, started = (json.loads(line) for line in output["stdout"].splitlines())
    assert forked == started


async def test_python_variables_get_an_interpreter_of_their_own(
    images: ImageBuilder, no_leaks: None, runtime: str, tmp_path: Path
) -> None:
    # The host's interpreter was not started with them: a fork could not honour them.
    profile = {"pool_size": 1, "env": {"PYTHONHASHSEED": "0"}}
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.python",), runtime=runtime, profiles={"default": profile}
    ) as opened:
        code = "import sys\nprint(sys.flags.hash_randomization, sys.orig_argv[1])"
        output = await python(opened, code)
    assert output["stdout"] == "0 -c\n", output


async def test_a_snippet_cannot_reach_the_host_or_the_runner(platform: Platform) -> None:
    output = await python(
        platform,
        """
        import ctypes, errno, json, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        def outcome(result):
            return errno.errorcode[ctypes.get_errno()] if result == -1 else "ok"
        def attempt(func):
            try:
                func()
            except OSError as exc:
                return errno.errorcode.get(exc.errno, str(exc.errno))
            return "ok"
        found = {}
        for name, pid in (("host", os.getppid()), ("runner", 1)):
            found[f"{name} ptrace"] = outcome(libc.ptrace(16, pid, None, None))  # PTRACE_ATTACH
            for mode in ("r", "w"):
                flags = os.O_RDONLY if mode == "r" else os.O_RDWR
                found[f"{name} mem {mode}"] = attempt(
                    lambda: os.close(os.open(f"/proc/{pid}/mem", flags))
                )
            buffer = ctypes.create_string_buffer(64)
            local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 64)
            remote = IoVec(0x400000, 64)
            for call, number in (("readv", 310), ("writev", 311)):
                found[f"{name} {call}"] = outcome(
                    libc.syscall(number, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
                )
        found["runner kill"] = attempt(lambda: os.kill(1, signal.SIGKILL))
        print(json.dumps(found))
        """,
    )
    found = findings(output)
    refused = {"EPERM", "EACCES"}
    if platform.profiles["default"].runtime == "runsc":
        # gVisor (2022-12) has no process_vm_readv/writev at all; the filter
        # answers first for pid 1.
        refused.add("ENOSYS")
    assert all(value in refused for value in found.values()), found


async def test_the_host_serves_one_call_only(platform: Platform) -> None:
    # A second request, written into the host's stdin by the snippet it
    # serves, is never read: the host took its one request and exits after it.
    second = json.dumps({"path": "second.txt", "content": "smuggled"}).encode()
    call = "\0".join(["/workspace", "5", "python3", "-S", "-m", "stockade_sdk.run",
                      "toolkits.files:write", "0"]).encode()  # fmt: skip
    framed = b"".join(len(part).to_bytes(4, "big") + part for part in (call, second))
    output = await python(
        platform,
        f"""
        import json, os
        try:
            fd = os.open(f"/proc/{{os.getppid()}}/fd/0", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, {framed!r})
            said = "written"
        except OSError as exc:
            said = exc.strerror
        print(json.dumps({{"second request": said}}))
        """,
        run_id="once",
    )
    findings(output)  # written under gVisor, refused under runc: served by nobody either way
    listing = await platform.gateway.call(
        ToolCall(id="l", name="files.list", arguments={}, run_id="once")
    )
    # Only python.run's kept namespace (.stockade/) is there: no second.txt.
    entries = [e for e in json.loads(listing.output)["entries"] if e["path"] != ".stockade"]
    assert entries == [], "the smuggled request never ran"


async def test_a_command_never_runs_beside_an_idle_host(platform: Platform) -> None:
    # Not the tool entry point: the runner kills the waiting host before
    # it starts the command (nothing runs in the container but what it starts).
    backend = platform.sandbox
    # Every process but the shell's own: only the runner (pid 1) may be there.
    listing = "for p in /proc/[0-9]*; do [ ${p#/proc/} = $$ ] || head -c 40 $p/stat; echo; done"
    request = ExecRequest(argv=("sh", "-c", listing))
    result = await backend.execute(request, platform.profiles["default"])
    assert result.status is ExecStatus.OK, result
    others = [line for line in result.stdout.splitlines() if line and "(head)" not in line]
    assert [line.split()[0] for line in others] == ["1"], result.stdout


async def test_a_host_imports_its_profiles_toolkits_and_others_when_a_call_needs_them(
    platform: Platform,
) -> None:
    # The platform gives each profile the toolkits of the tools that run in it:
    # this one runs files.* and python.run, so its host has those loaded, not
    # the image's other toolkits (nor the http toolkit's urllib.request, 15-18 ms
    # of a host's start, which only a fetch needs).
    default = platform.profiles["default"]
    assert default.host_toolkits == ("toolkits.files", "toolkits.python")
    output = await python(
        platform,
        """
        import json, sys
        print(json.dumps({name: name in sys.modules for name in (
            "toolkits.files", "toolkits.python", "toolkits.http", "toolkits.shell",
            "urllib.request")}))
        """,
    )
    assert findings(output) == {
        "toolkits.files": True,
        "toolkits.python": True,
        "toolkits.http": False,
        "toolkits.shell": False,
        "urllib.request": False,
    }
    # A call of a toolkit its profile does not list (a profile set by hand)
    # has the host import the tool's module when the call arrives.
    narrow = default.model_copy(update={"host_toolkits": ("toolkits.python",)})
    routed = ExecRequest(
        argv=(*ENTRY_ARGV, "toolkits.shell:run"),
        stdin=b'{"command": "echo routed"}',
        env={"PYTHONPATH": "/opt/stockade/lib"},
    )
    result = await platform.sandbox.execute(routed, narrow)
    assert result.status is ExecStatus.OK and "routed" in result.stdout, result

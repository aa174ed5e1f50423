"""The runner cannot be touched by the program it runs, under runc and gVisor.

The program runs with the runner's uid and no capabilities; each test below
runs a real attack from inside the sandbox against pid 1 (the runner, which
frames the reply) and checks both what the attack got and that the host still
received the honest report.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]

# Shared by the attacks: a C library handle and an outcome in errno names.
PRELUDE = """
import ctypes, errno, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def outcome(result):
    if result == -1:
        return errno.errorcode[ctypes.get_errno()]
    return "ok"
def attempt(func):
    try:
        func()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
"""


async def attack(
    backend: DockerBackend, profile: SandboxProfile, code: str, **kwargs: object
) -> ExecResult:
    script = PRELUDE + textwrap.dedent(code)
    request = ExecRequest(argv=("python3", "-c", script), **kwargs)  # type: ignore[arg-type]
    return await backend.execute(request, profile)


def report(result: ExecResult) -> dict[str, object]:
    """The attack's findings: the last line of its stdout, as JSON."""
    assert result.status is ExecStatus.OK, result
    findings: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return findings


async def test_the_runner_is_pid_1_and_not_dumpable(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    # docker-init as pid 1 would be a same-uid process the program could
    # ptrace or write into; the runner itself is the container's init.
    result = await attack(
        backend,
        profile,
        """
        cmdline = open("/proc/1/cmdline", "rb").read().rstrip(b"\\0").split(b"\\0")
        print(json.dumps({"pid1": " ".join(part.decode() for part in cmdline), "parent": os.getppid()}))
        """,
    )
    findings = report(result)
    pid1 = findings["pid1"]
    assert isinstance(pid1, str), findings
    assert pid1.startswith("python3 ") and pid1.endswith("runner.pyc"), findings
    assert findings["parent"] == 1


async def test_ptrace_of_the_runner_is_refused(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    result = await attack(
        backend,
        profile,
        """
        PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE, WALL = 16, 17, 0x4206, 0x40000000
        found = {}
        for name, request in (("attach", PTRACE_ATTACH), ("seize", PTRACE_SEIZE)):
            found[name] = outcome(libc.ptrace(request, 1, None, None))
            if found[name] == "ok":  # let the runner go on, or the call only times out
                if request == PTRACE_ATTACH:
                    os.waitpid(1, WALL)
                libc.ptrace(PTRACE_DETACH, 1, None, None)
        print(json.dumps(found))
        """,
    )
    assert report(result) == {"attach": "EPERM", "seize": "EPERM"}


async def test_the_runners_memory_is_unreadable(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    secret = "stockade-request-secret-0815"
    result = await attack(
        backend,
        profile,
        """
        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        found = {}
        for mode in (os.O_RDONLY, os.O_RDWR):
            found[f"mem-{mode}"] = attempt(lambda: os.close(os.open("/proc/1/mem", mode)))
        buffer = ctypes.create_string_buffer(64)
        local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 64)
        maps = attempt(lambda: open("/proc/1/maps").read())
        remote = IoVec(0x400000, 64)  # any address: the call is refused before it is read
        for name, number in (("readv", 310), ("writev", 311)):
            found[name] = outcome(
                libc.syscall(number, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            )
        for name in ("environ", "maps", "auxv", "stack", "syscall"):
            found[name] = attempt(lambda: open(f"/proc/1/{name}", "rb").read())
        found["fd"] = attempt(lambda: os.listdir("/proc/1/fd"))
        try:
            environ = open("/proc/1/environ", "rb").read()
        except OSError:
            environ = b""
        found["secret-in-runner-environ"] = str(b"stockade-request" in environ)
        print(json.dumps(found))
        """,
        env={"REQUEST_SECRET": secret},
    )
    assert secret not in result.stdout
    found = report(result)
    refused = {"EACCES", "EPERM"}
    # The memory itself: refused under both runtimes.
    for key in ("mem-0", "mem-2", "readv", "writev"):
        assert found[key] in refused, (key, found)
    # What the request gave the program never reaches the runner's own environment.
    assert found["secret-in-runner-environ"] == "False"
    if profile.runtime == "runc":
        # The kernel hides every /proc file that needs ptrace access.
        for key in ("environ", "maps", "auxv", "stack", "syscall", "fd"):
            assert found[key] in refused, (key, found)
    else:
        # gVisor (2022-12) checks dumpability for mem and ptrace only: the
        # runner's environment (the image's, nothing secret), its memory map
        # and its descriptor table stay visible. The descriptors that matter
        # are out of reach anyway: see the forged-reply test below.
        assert found["environ"] == "ok" and found["fd"] == "ok", found


async def test_a_forged_reply_never_reaches_the_host(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    # A complete forged reply, written to every descriptor of the runner the
    # program can open. The host must still get the honest report.
    result = await attack(
        backend,
        profile,
        """
        import struct
        frames = [json.dumps({"exit_code": 0, "stdout_total": 6}).encode(), b"forged", b"", b""]
        forged = b"".join(struct.pack(">I", len(frame)) + frame for frame in frames)
        found = {}
        for number in range(64):
            path = f"/proc/1/fd/{number}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    found[str(number)] = errno.errorcode[exc.errno]
                continue
            try:
                os.write(fd, forged)
                found[str(number)] = "written " + os.readlink(path)
            except OSError as exc:
                found[str(number)] = errno.errorcode[exc.errno]
            os.close(fd)
        print("honest")
        print(json.dumps(found), flush=True)
        sys.exit(3)
        """,
    )
    # The report is the runner's: the exit code is the program's own.
    assert result.status is ExecStatus.ERROR, result
    assert result.exit_code == 3
    findings = json.loads(result.stdout.splitlines()[-1])
    written = [target for target in findings.values() if target.startswith("written")]
    if profile.runtime == "runc":
        assert result.stdout.startswith("honest\n"), result.stdout
        assert written == [], findings
    else:
        # gVisor opens whatever the runner holds by now: /dev/null, the
        # container's stderr (nobody reads it) and the pipes of the program
        # itself (what it writes there is its own output). The host's stream
        # is in flight inside a Unix socket, in no descriptor table.
        assert "honest\n" in result.stdout


async def test_signals_to_the_runner_are_refused(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    # Every route a same-uid process has to signal pid 1. If one got through,
    # the runner would die (or stop) and the host would get no report.
    result = await attack(
        backend,
        profile,
        """
        import fcntl, resource, signal
        found = {}
        for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGSEGV", "SIGCHLD", "SIGSTOP", "SIGKILL"):
            found["kill " + sig] = attempt(lambda: os.kill(1, getattr(signal, sig)))
        found["kill -1"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
        found["killpg 1"] = attempt(lambda: os.killpg(1, signal.SIGKILL))
        found["tkill"] = outcome(libc.syscall(200, 1, signal.SIGKILL))
        found["tgkill"] = outcome(libc.syscall(234, 1, 1, signal.SIGKILL))
        info = ctypes.create_string_buffer(128)
        found["rt_sigqueueinfo"] = outcome(libc.syscall(129, 1, signal.SIGKILL, info))
        found["rt_tgsigqueueinfo"] = outcome(libc.syscall(297, 1, 1, signal.SIGKILL, info))
        found["pidfd_open"] = attempt(lambda: os.pidfd_open(1))
        def through_proc_dir():
            fd = os.open("/proc/1", os.O_RDONLY | os.O_DIRECTORY)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        found["pidfd_send_signal /proc/1"] = attempt(through_proc_dir)
        # RLIMIT_CPU's hard limit ends in SIGKILL from the kernel.
        found["prlimit"] = attempt(lambda: resource.prlimit(1, resource.RLIMIT_CPU, (0, 0)))
        # F_SETSIG would let I/O readiness deliver any signal to the owner.
        read_end, _ = os.pipe()
        found["F_SETSIG"] = attempt(lambda: fcntl.fcntl(read_end, 10, signal.SIGKILL))
        state = open("/proc/1/stat").read().rsplit(")", 1)[1].split()[0]
        found["runner state"] = state
        print(json.dumps(found))
        """,
    )
    found = report(result)
    state = found.pop("runner state")
    assert state in ("S", "R"), "the runner must not be stopped"
    assert found == dict.fromkeys(found, "EPERM"), found


async def test_the_program_gets_default_signal_handling(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    # The runner ignores every signal it can; none of that may leak into the
    # program it starts (SIG_IGN survives exec). Python sets SIGINT, SIGPIPE
    # and SIGXFSZ itself; the shell's pipeline shows SIGPIPE at its default.
    result = await attack(
        backend,
        profile,
        """
        import subprocess
        own = {signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ}
        not_default = [
            sig.name for sig in signal.valid_signals()
            if sig not in own and signal.getsignal(sig) is not signal.SIG_DFL
        ]
        pipeline = subprocess.run(["sh", "-c", "yes | head -c 2"], capture_output=True, text=True)
        print(json.dumps({"not default": " ".join(not_default), "yes": pipeline.stderr}))
        """,
    )
    assert report(result) == {"not default": "", "yes": ""}


async def test_the_runner_reaps_orphans_like_an_init(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    # Orphans come to pid 1. Unreaped, their zombies would use up the pids
    # limit long before this loop ends. Under gVisor a fork costs ~20 ms, so
    # the loop takes ~9 s unloaded: the deadline is the default profile's, not
    # the test profile's 10 s (a loaded CI machine went past that).
    result = await attack(
        backend,
        profile.model_copy(update={"timeout_s": 30.0}),
        f"""
        import time
        for _ in range({profile.pids * 3}):
            child = os.fork()
            if child == 0:
                if os.fork() == 0:
                    os._exit(0)  # the orphan: its parent is already gone
                os._exit(0)
            os.waitpid(child, 0)
            time.sleep(0.005)
        print(json.dumps({{"forks": "done"}}))
        """,
    )
    assert report(result) == {"forks": "done"}

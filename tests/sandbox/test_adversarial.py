"""Attacks the sandbox must contain, under runc and gVisor.

Each test asserts that the call ends with the right status, that the next call
in a fresh container is unaffected, and (through the ``backend`` fixture's
leak check) that no container outlives the test.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]


async def run(
    backend: DockerBackend, profile: SandboxProfile, script: str, **kwargs: object
) -> ExecResult:
    return await backend.execute(ExecRequest(argv=("sh", "-c", script), **kwargs), profile)  # type: ignore[arg-type]


async def py(
    backend: DockerBackend, profile: SandboxProfile, code: str, **kwargs: object
) -> ExecResult:
    request = ExecRequest(argv=("python3", "-c", textwrap.dedent(code)), **kwargs)  # type: ignore[arg-type]
    return await backend.execute(request, profile)


async def assert_next_call_unaffected(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await run(backend, profile, "echo ok; ls /tmp | wc -l")
    assert result.status is ExecStatus.OK, result
    assert result.stdout == "ok\n0\n", "a fresh container must start clean"


def host_process_count() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


@pytest.mark.exclusive  # counts the host's processes: another test's would blur the count
async def test_fork_bomb(backend: DockerBackend, profile: SandboxProfile) -> None:
    before = host_process_count()
    result = await py(
        backend,
        profile,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        timeout_s=3,
    )
    if profile.runtime == "runc":
        assert result.status is ExecStatus.TIMEOUT
    else:
        # Under gVisor every guest process costs the Sentry memory and host
        # stub processes: the bomb ends the whole sandbox (memory or pids
        # cgroup) before the deadline. Contained all the same.
        assert result.status in (ExecStatus.TIMEOUT, ExecStatus.OOM_KILLED, ExecStatus.ERROR)
        if result.status is ExecStatus.ERROR:
            assert "sandbox died" in result.message
    await assert_next_call_unaffected(backend, profile)
    await backend.close()
    assert host_process_count() < before + 50, "fork bomb processes survived on the host"


async def test_fork_bomb_hits_the_pids_limit(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    result = await py(
        backend,
        profile,
        """
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print(children, exc.errno)
        """,
        timeout_s=8,
    )
    assert result.status is ExecStatus.OK, result
    children, errno = (int(part) for part in result.stdout.split())
    assert children < profile.pids, "more processes than the profile allows"
    assert errno == 11  # EAGAIN: the pids cgroup said no
    await assert_next_call_unaffected(backend, profile)


async def test_memory_bomb(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await py(
        backend,
        profile,
        """
        chunks = []
        while True:
            chunks.append(bytearray(8 * 2**20))
        """,
    )
    assert result.status is ExecStatus.OOM_KILLED, result
    await assert_next_call_unaffected(backend, profile)


async def test_cpu_spin_past_deadline(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await py(backend, profile, "while True: pass", timeout_s=1.5)
    assert result.status is ExecStatus.TIMEOUT
    assert result.duration_s < 1.5 + 3
    await assert_next_call_unaffected(backend, profile)


async def test_process_ignoring_sigterm(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await run(
        backend, profile, "trap '' TERM INT HUP; while :; do sleep 1; done", timeout_s=1
    )
    assert result.status is ExecStatus.TIMEOUT
    assert result.duration_s < 4
    await assert_next_call_unaffected(backend, profile)


async def test_fill_tmpfs(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await run(backend, profile, "dd if=/dev/zero of=/tmp/fill bs=1M count=1000")
    assert result.status is ExecStatus.ERROR
    assert "No space left on device" in result.stderr
    await assert_next_call_unaffected(backend, profile)


async def test_fill_root_filesystem(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await run(
        backend,
        profile,
        "for d in / /var/tmp /home /opt; do dd if=/dev/zero of=$d/fill bs=1M count=10 || echo refused; done",
    )
    assert result.stdout.count("refused") == 4
    await assert_next_call_unaffected(backend, profile)


async def test_fill_workspace(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path
) -> None:
    workspaces = WorkspaceManager(tmp_path)
    workspace = workspaces.open("fill")
    (workspace.path / "keep.txt").write_text("precious")
    result = await run(
        backend, profile, "dd if=/dev/zero of=fill bs=1M count=1000", workspace=workspace
    )
    assert result.status is ExecStatus.ERROR
    assert "No space left on device" in result.stderr
    total = sum(f.stat().st_size for f in workspace.path.rglob("*") if f.is_file())
    assert total <= profile.workspace_bytes
    assert (workspace.path / "keep.txt").read_text() == "precious"
    await assert_next_call_unaffected(backend, profile)


async def test_gigabyte_of_stdout(backend: DockerBackend, profile: SandboxProfile) -> None:
    # runc moves the gigabyte in a few seconds (the hardened maximum deadline is
    # room to spare); gVisor moves ~45 MB/s through a pipe here, so it is cut at
    # 10 s, by when several hundred megabytes have gone past the cap: what the
    # test is about (CI time: 30 s of a gVisor flood proved nothing more).
    patient = profile.model_copy(update={"timeout_s": 30.0 if profile.runtime == "runc" else 10.0})
    result = await run(backend, patient, "head -c 1073741824 /dev/zero")
    assert result.truncated
    if result.status is ExecStatus.TIMEOUT:
        # Only a slow gVisor may run out of time; the cap must still hold (what a
        # deadline kill keeps is head and tail, joined by a short omission marker).
        assert profile.runtime == "runsc"
        cap = profile.output_limit_bytes
        assert cap <= len(result.stdout) <= cap + 64, "host memory must stay capped"
        assert "omitted" in result.stdout
        assert result.stdout_bytes > 64 * profile.output_limit_bytes
    else:
        assert result.status is ExecStatus.OUTPUT_TRUNCATED, result.message
        assert len(result.stdout) == profile.output_limit_bytes, "host memory must stay capped"
        assert result.stdout_bytes == 1 << 30
    await assert_next_call_unaffected(backend, profile)


async def test_zombies_and_orphans(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await py(
        backend,
        profile,
        """
        import os, subprocess
        for _ in range(20):
            if os.fork() == 0:
                os._exit(0)          # never waited for: a zombie
        for _ in range(5):           # orphans that escape the process group
            subprocess.Popen(["sleep", "300"], start_new_session=True)
        print("left behind")
        """,
    )
    assert result.status is ExecStatus.OK
    assert result.stdout == "left behind\n"
    assert result.duration_s < 5, "orphans holding the output pipes must not stall the call"
    await assert_next_call_unaffected(backend, profile)


async def test_no_network_from_inside(backend: DockerBackend, profile: SandboxProfile) -> None:
    # Containment is checked from inside: interfaces and routes first. Only
    # once those show no packet can leave is a name looked up (a reserved
    # .invalid name), and that must fail.
    result = await py(
        backend,
        profile,
        """
        import socket
        interfaces = sorted(open("/proc/net/dev").read().split("\\n")[2:-1])
        names = [line.split(":")[0].strip() for line in interfaces]
        routes = open("/proc/net/route").read().strip().split("\\n")[1:]
        routes6 = [line for line in open("/proc/net/ipv6_route").read().split("\\n")
                   if line and not line.endswith(" lo")] if names else []
        print(names, len(routes), len(routes6))
        assert names == ["lo"] and not routes and not routes6, "must not look anything up"
        try:
            socket.getaddrinfo("stockade-probe.invalid", 80)
            print("resolved")
        except OSError as exc:
            print("resolution failed")
        """,
    )
    assert result.status is ExecStatus.OK, result
    assert result.stdout == "['lo'] 0 0\nresolution failed\n"
    await assert_next_call_unaffected(backend, profile)


async def test_orchestrator_environment_is_invisible(
    backend: DockerBackend, profile: SandboxProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "stockade-planted-secret-4711"
    monkeypatch.setenv("STOCKADE_PLANTED_SECRET", secret)
    result = await run(
        backend,
        profile,
        "env; cat /proc/1/environ /proc/self/environ 2>/dev/null; "
        "grep -rs stockade-planted /proc/*/environ /etc /opt /tmp 2>/dev/null; true",
    )
    assert result.status is ExecStatus.OK
    assert secret not in result.stdout + result.stderr
    assert "STOCKADE_PLANTED_SECRET" not in result.stdout


async def test_no_docker_socket(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await run(
        backend,
        profile,
        "for s in /var/run/docker.sock /run/docker.sock; do [ -e $s ] && echo present || echo absent; done;"
        " find / -xdev -type s 2>/dev/null | wc -l",
    )
    assert result.stdout.startswith("absent\nabsent\n")
    assert result.stdout.strip().endswith("0"), "no Unix socket may be reachable"


async def test_proc_sysrq_and_sys_writes(backend: DockerBackend, profile: SandboxProfile) -> None:
    # 'h' only prints help to the kernel log: harmless even if it got through.
    result = await run(
        backend,
        profile,
        "echo h > /proc/sysrq-trigger || echo sysrq-refused; "
        "cat /proc/sys/vm/overcommit_memory > /tmp/v; "
        "cat /tmp/v > /proc/sys/vm/overcommit_memory || echo sys-refused; "
        "echo sandbox > /proc/sys/kernel/hostname || echo hostname-refused",
    )
    assert "sysrq-refused" in result.stdout
    assert "sys-refused" in result.stdout
    assert "hostname-refused" in result.stdout
    await assert_next_call_unaffected(backend, profile)


async def test_privilege_escalation(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await py(
        backend,
        profile,
        """
        import ctypes, os, subprocess
        def attempt(name, func):
            try:
                func()
                print(name, "succeeded")
            except OSError:
                print(name, "refused")
        attempt("setuid", lambda: os.setuid(0))
        attempt("setgid", lambda: os.setgid(0))
        libc = ctypes.CDLL(None, use_errno=True)
        def mount():
            if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
                raise OSError(ctypes.get_errno(), "mount")
        attempt("mount", mount)
        def chroot():
            os.chroot("/tmp")
        attempt("chroot", chroot)
        setuid_files = subprocess.run(
            ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
            capture_output=True, text=True).stdout.split()
        print("setuid-files", len(setuid_files))
        unshare = subprocess.run(["unshare", "-r", "sh", "-c", "id -u; touch /x"],
                                 capture_output=True, text=True)
        print("unshare-root-write", "ok" if unshare.returncode == 0 else "refused")
        """,
    )
    lines = result.stdout.splitlines()
    assert lines[:4] == ["setuid refused", "setgid refused", "mount refused", "chroot refused"]
    assert lines[4] == "setuid-files 0"
    assert lines[5] == "unshare-root-write refused"
    await assert_next_call_unaffected(backend, profile)


async def test_workspace_links_and_special_files_do_not_come_back(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path
) -> None:
    workspace = WorkspaceManager(tmp_path / "ws").open("links")
    result = await run(
        backend,
        profile,
        "echo data > real.txt; ln -s /etc/passwd passwd-link; ln -s .. up; "
        "ln real.txt hard.txt; mkfifo pipe; mkdir -p sub && ln -s ../../.. sub/escape",
        workspace=workspace,
    )
    assert result.status is ExecStatus.OK
    kept = sorted(str(p.relative_to(workspace.path)) for p in workspace.path.rglob("*"))
    # The two names of the hard-linked file arrive as one file and one link
    # (archive order decides which); the link is refused.
    assert kept in (["hard.txt", "sub"], ["real.txt", "sub"])
    assert not any(p.is_symlink() for p in workspace.path.rglob("*"))
    rejected = " ".join(result.files_rejected)
    for name in ("passwd-link", "up", "pipe", "sub/escape", "hard link"):
        assert name in rejected
    await assert_next_call_unaffected(backend, profile)


# A runner that lies: it answers every request with a reply of its own, whose
# workspace entries are full of escapes. (The program can no longer reach the
# real runner's stream; see tests/sandbox/test_runner_isolation.py. The host
# must contain a lying sandbox all the same.) argv[0] of the request picks the
# lie: "escapes", "huge" (a file announced past the quota) or "flood" (more
# entries than the profile allows).
LYING_RUNNER = """
import json, struct, sys
out, inp = sys.stdout.buffer, sys.stdin.buffer
def frame(data):
    out.write(struct.pack(">I", len(data)) + data)
def read_frame():
    return inp.read(struct.unpack(">I", inp.read(4))[0])
frame(b"stockade-ready")
out.flush()
header = read_frame().split(b"\\0")
lie = header[9].decode()  # argv[0], after version, timeout, 3 limits, flag, cwd, mode, argc
read_frame()  # stdin
while read_frame():  # the workspace, up to its end frame
    pass
for data in (json.dumps({"exit_code": 0, "stdout_total": 6}).encode(), b"forged", b""):
    frame(data)
if lie == "escapes":
    for entry in (
        b"F644\\0../escaped.txt", b"x",
        b"F644\\0/abs/escaped.txt", b"x",
        b"F644\\0a/../../escaped2.txt", b"x",
        b"Rsymbolic link to '/etc/passwd'\\0link",
        b"Rdevice file\\0dev",
        b"Kkept-but-never-sent.txt",
        b"F755\\0fine.txt", b"fine",
    ):
        frame(entry)
    frame(b"")
elif lie == "huge":
    frame(b"F644\\0huge")
    out.write(struct.pack(">I", 1 << 31))  # announced; the host must not wait for it
elif lie == "flood":
    for index in range(100000):
        frame(b"Dd%d" % index)
out.flush()
"""


@pytest.fixture
async def lying_image(
    docker_client: docker.DockerClient, images: ImageBuilder, tmp_path: Path
) -> AsyncIterator[str]:
    """The sandbox image with its runner replaced by ``LYING_RUNNER``."""
    context = tmp_path / "lying-context"
    context.mkdir()
    (context / "runner.py").write_text(LYING_RUNNER)
    (context / "Dockerfile").write_text(
        f"FROM {images.resolve('stockade-sandbox')}\nCOPY runner.py /opt/stockade/runner.py\n"
        'CMD ["python3", "-I", "-S", "/opt/stockade/runner.py"]\n'
    )
    tag = f"stockade-test-lying-runner:{os.getpid()}"
    docker_client.images.build(path=str(context), tag=tag, rm=True)
    yield tag
    # The backend removes a call's container just after the call (on this
    # loop): an image removed before that would only lose its tag and stay behind.
    async with asyncio.timeout(30):
        while docker_client.api.containers(all=True, filters={"ancestor": tag}):
            await asyncio.sleep(0.05)
    docker_client.images.remove(tag, force=True)


async def test_forged_runner_reply_with_path_traversal(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path, lying_image: str
) -> None:
    root = tmp_path / "ws"
    workspace = WorkspaceManager(root).open("forged")
    lying = profile.model_copy(update={"image": lying_image, "pool_size": 0})
    result = await backend.execute(ExecRequest(argv=("escapes",), workspace=workspace), lying)
    assert result.stdout == "forged"  # the forgery is what the host got...
    assert sorted(p.name for p in workspace.path.iterdir()) == ["fine.txt"]  # ...and contained
    assert not list(tmp_path.rglob("escaped*"))
    rejected = "\n".join(result.files_rejected)
    assert len(result.files_rejected) == 6, rejected
    for reason in ("climbs out", "absolute path", "symbolic link", "device file", "never sent"):
        assert reason in rejected
    await assert_next_call_unaffected(backend, profile)


@pytest.mark.parametrize("lie", ["huge", "flood"])
async def test_a_lying_runner_cannot_break_the_workspace_quota(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path, lying_image: str, lie: str
) -> None:
    workspace = WorkspaceManager(tmp_path / "ws").open("quota")
    (workspace.path / "precious.txt").write_text("kept")
    lying = profile.model_copy(update={"image": lying_image, "pool_size": 0})
    result = await backend.execute(ExecRequest(argv=(lie,), workspace=workspace), lying)
    assert result.status is ExecStatus.WORKSPACE_REJECTED, result
    assert "workspace left unchanged" in result.message
    assert [p.name for p in workspace.path.iterdir()] == ["precious.txt"]
    assert (workspace.path / "precious.txt").read_text() == "kept"

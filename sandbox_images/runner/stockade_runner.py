"""In-container runner: executes exactly one request, then exits.

Standard library only: it runs inside the sandbox image, started as the
container's command and so its init (pid 1). The host speaks to it over the
container's attached stdin/stdout with length-prefixed frames (4-byte
big-endian size, then the payload):

    ready    runner -> host   b"stockade-ready"                  (once, at start)
    request  host -> runner   header, stdin bytes, workspace tar
    response runner -> host   report JSON, stdout, stderr, workspace tar

The request header is NUL-separated text (no argument or environment entry
can hold a NUL): version, timeout, output limit, stdin limit, workspace
limit, return-workspace flag, cwd, argc, argv..., envc, KEY=VALUE...

A container starts one runner for one call, so start-up time is paid on
every call: this file imports only built-in modules (no ``subprocess``,
``json`` or ``selectors``, which cost more than the rest of the start).

The host treats everything this process sends as hostile, so nothing here is
trusted for safety. Still, nothing the tool runs may inspect or alter the
process that reports on it. The tool runs with the runner's uid and no
capabilities (``cap_drop=ALL``, ``no-new-privileges``), so it cannot be given
another uid; instead, before it says ready, the runner (see ``_Guard``):

- is the container's init (pid 1). docker-init in that place would be a
  same-uid process the tool could ptrace or write into, and a way to signal
  the runner through it; as init, the runner reaps orphans, and its exit ends
  every process left in the container;
- is not dumpable: ptrace, ``/proc/1/mem`` and ``process_vm_readv`` need a
  privilege nobody in the container has (under runc also ``/proc/1/environ``,
  ``fd``, ``maps``...);
- ignores every signal it can and installs a seccomp filter, inherited by all
  it starts, that refuses the calls acting on pid 1 (kill, tkill, tgkill,
  sigqueue, pidfd, ptrace, process_vm_*, prlimit) and ``kill(-1)``. runc's
  kernel already drops signals sent to a namespace's init from inside, but
  gVisor delivers even SIGKILL and SIGSTOP;
- keeps the host's stream out of its descriptor table while the tool runs
  (in flight inside a Unix socket): gVisor lets a same-uid process open
  ``/proc/1/fd/N`` even when pid 1 is not dumpable, and a socket cannot be
  opened through ``/proc``;
- runs the egress forwarder, whose threads the filter could not name, in a
  forked process of its own.
"""

from __future__ import annotations

import os
import select
import sys
import time

# Importing typing costs start-up time; mypy evaluates this block anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same calls, typed (the C module has no stubs)
    from types import FrameType
    from typing import BinaryIO

    # syscall number -> (argument naming the target or None, values refused)
    _Rules = dict[int, tuple[int | None, tuple[int, ...]]]
else:
    import _signal  # the signal module imports enum: 4 ms here, 14 ms under gVisor

PROTOCOL_VERSION = "1"
READY = b"stockade-ready"
_LEN_BYTES = 4
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: bigger pipes mean fewer reads of a flood
# After the tool's main process exits, background children that still hold
# its stdout/stderr get this long to finish writing before they are killed.
_EXIT_GRACE_S = 0.05
# SIGCHLD wakes the loop at once; this bounds the wait should the program
# drain the wake-up pipe (gVisor lets it open /proc/1/fd/N).
_REAP_EVERY_S = 0.1
# Bound on killing what the program left behind before the workspace is taken.
_SWEEP_S = 1.0
_SWEEP_POLL_S = 0.005
_OOM_FILES = (
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
    "/sys/fs/cgroup/memory.events",  # cgroup v2
)
# Linux signal numbers: the signal module imports enum, which costs more
# start-up time than the rest of this file.
_SIGKILL, _SIGPIPE, _SIGCHLD, _SIGSTOP, _SIGXFSZ = 9, 13, 17, 19, 25
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_EGRESS_SOCKET_ENV = "STOCKADE_EGRESS_SOCKET"
_EGRESS_PORT = 3128
# The SDK leaves processes by this name out of what a tool left behind.
_EGRESS_PROCESS_NAME = b"stockade-egress"

_PR_SET_NAME, _PR_SET_DUMPABLE, _PR_SET_SECCOMP = 15, 4, 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_EPERM = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_DATA_ARCH = 4
_SECCOMP_DATA_ARGS = 16  # then 8 bytes per argument; the low half comes first
_RUNNER_PID = 1
_EVERY_PROCESS = 0xFFFFFFFF  # pid -1 as the 32 bits the kernel reads
_F_SETSIG = 10
# Per machine: the audit arch, the first number of a second ABI sharing it
# (x32), and per syscall acting on another process: which argument names it
# (None: refused whatever it names) and the values refused there.
_SECCOMP_TABLES: dict[str, tuple[int, int | None, _Rules]] = {
    "x86_64": (
        0xC000003E,
        0x40000000,
        {
            62: (0, (_RUNNER_PID, _EVERY_PROCESS)),  # kill
            200: (0, (_RUNNER_PID,)),  # tkill
            234: (0, (_RUNNER_PID,)),  # tgkill
            129: (0, (_RUNNER_PID,)),  # rt_sigqueueinfo
            297: (0, (_RUNNER_PID,)),  # rt_tgsigqueueinfo
            434: (0, (_RUNNER_PID,)),  # pidfd_open
            424: (None, ()),  # pidfd_send_signal: a /proc/1 directory serves as a pidfd
            101: (1, (_RUNNER_PID,)),  # ptrace
            310: (0, (_RUNNER_PID,)),  # process_vm_readv
            311: (0, (_RUNNER_PID,)),  # process_vm_writev
            302: (0, (_RUNNER_PID,)),  # prlimit64: RLIMIT_CPU's hard limit ends in SIGKILL
            72: (1, (_F_SETSIG,)),  # fcntl: F_SETSIG picks the signal sent to an fd's owner
        },
    ),
    "aarch64": (  # asm-generic numbers
        0xC00000B7,
        None,
        {
            129: (0, (_RUNNER_PID, _EVERY_PROCESS)),
            130: (0, (_RUNNER_PID,)),
            131: (0, (_RUNNER_PID,)),
            138: (0, (_RUNNER_PID,)),
            240: (0, (_RUNNER_PID,)),
            434: (0, (_RUNNER_PID,)),
            424: (None, ()),
            117: (1, (_RUNNER_PID,)),
            270: (0, (_RUNNER_PID,)),
            271: (0, (_RUNNER_PID,)),
            261: (0, (_RUNNER_PID,)),
            25: (1, (_F_SETSIG,)),
        },
    ),
}


class Request:
    """One call, decoded from the NUL-separated header."""

    def __init__(self, header: bytes) -> None:
        fields = header.decode("utf-8", "surrogateescape").split("\0")
        if fields[0] != PROTOCOL_VERSION:
            raise ValueError(f"protocol version {fields[0]!r}, expected {PROTOCOL_VERSION}")
        self.timeout_s = float(fields[1])
        self.output_limit = int(fields[2])
        self.stdin_limit = int(fields[3])
        self.workspace_limit = int(fields[4])
        self.return_workspace = fields[5] == "1"
        self.cwd = fields[6]
        argc = int(fields[7])
        self.argv = fields[8 : 8 + argc]
        envc = int(fields[8 + argc])
        self.env = dict(_BASE_ENV)
        for entry in fields[9 + argc : 9 + argc + envc]:
            key, _, value = entry.partition("=")
            self.env[key] = value


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError(f"stdin closed with {remaining} of {size} bytes missing")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO, limit: int) -> bytes:
    size = int.from_bytes(_read_exact(stream, _LEN_BYTES), "big")
    if size > limit:
        raise ValueError(f"frame of {size} bytes exceeds {limit}")
    return _read_exact(stream, size)


def _write_frames(stream: BinaryIO, *payloads: bytes) -> None:
    for payload in payloads:
        stream.write(len(payload).to_bytes(_LEN_BYTES, "big"))
        stream.write(payload)
    stream.flush()


def _escape(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"  # a lone surrogate (undecodable file name) cannot be encoded
    if char < " " or char in '"\\':
        return f"\\u{ord(char):04x}"
    return char


def _json(value: object) -> str:
    """JSON for the flat report (str, int, float, bool, None) without importing json."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(_escape(char) for char in value)
        return f'"{escaped}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json(key)}: {_json(item)}" for key, item in value.items()) + "}"
    raise TypeError(type(value).__name__)


def _oom_kills() -> int:
    for path in _OOM_FILES:
        try:
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return 0


def _extract_workspace(data: bytes, root: str) -> None:
    if not data:
        return
    import io  # noqa: PLC0415 - only calls with a workspace pay for these imports
    import tarfile  # noqa: PLC0415

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive.getmembers():
            # The host only sends what it validated, but stay strict anyway.
            name = os.path.normpath(member.name)
            if name.startswith(("/", "..")) or not (member.isfile() or member.isdir()):
                continue
            target = os.path.join(root, name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with open(target, "wb") as out:
                out.write(source.read())
            os.chmod(target, member.mode & 0o755 | 0o600)


def _pack_workspace(root: str, limit: int) -> tuple[bytes, str | None]:
    import io  # noqa: PLC0415 - only calls with a workspace pay for these imports
    import tarfile  # noqa: PLC0415

    buffer = io.BytesIO()
    try:
        with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.PAX_FORMAT) as archive:
            for entry in sorted(os.listdir(root)):
                # Links and special files are added as what they are; the host
                # refuses them. Nothing is dereferenced here.
                archive.add(os.path.join(root, entry), arcname=entry, recursive=True)
                if buffer.tell() > limit:
                    return b"", f"workspace exceeds its quota of {limit} bytes"
    except OSError as exc:
        return b"", f"workspace could not be archived: {exc}"
    data = buffer.getvalue()
    if len(data) > limit:
        return b"", f"workspace exceeds its quota of {limit} bytes"
    return data, None


def _bpf(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (native byte order)
    return (
        code.to_bytes(2, sys.byteorder)
        + bytes((jump_true, jump_false))
        + k.to_bytes(4, sys.byteorder)
    )


def _seccomp_program(machine: str) -> list[bytes]:
    """A filter refusing (EPERM) the syscalls of ``_SECCOMP_TABLES`` aimed at the runner."""
    if machine not in _SECCOMP_TABLES:
        raise RuntimeError(f"no seccomp table for {machine}: the runner cannot guard itself")
    arch, second_abi, rules = _SECCOMP_TABLES[machine]
    program = [
        # Another ABI has other numbers: it could name kill differently.
        _bpf(_BPF_LD_W_ABS, _SECCOMP_DATA_ARCH),
        _bpf(_BPF_JEQ_K, arch, jump_true=1),
        _bpf(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS),
        _bpf(_BPF_LD_W_ABS, 0),  # the syscall number
    ]
    if second_abi is not None:
        program += [
            _bpf(_BPF_JGE_K, second_abi, jump_false=1),
            _bpf(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS),
        ]
    for number, (argument, refused) in rules.items():
        if argument is None:
            block = [_bpf(_BPF_RET_K, _SECCOMP_RET_EPERM)]
        else:
            block = [_bpf(_BPF_LD_W_ABS, _SECCOMP_DATA_ARGS + 8 * argument)]
            # Each match jumps past the rest of the matches and the allow.
            block += [
                _bpf(_BPF_JEQ_K, value, jump_true=len(refused) - index)
                for index, value in enumerate(refused)
            ]
            block += [_bpf(_BPF_RET_K, _SECCOMP_RET_ALLOW), _bpf(_BPF_RET_K, _SECCOMP_RET_EPERM)]
        program.append(_bpf(_BPF_JEQ_K, number, jump_false=len(block)))
        program += block
    program.append(_bpf(_BPF_RET_K, _SECCOMP_RET_ALLOW))
    return program


def _on_child(signum: int, frame: FrameType | None) -> None:
    """Nothing to do: the wake-up descriptor already woke the loop to reap."""


class _Guard:
    """What keeps the program away from the runner; see the module docstring.

    Set up before the ready frame, so a pooled container has paid for it
    (ctypes costs 2 ms here, 10 ms under gVisor) before a call arrives.
    """

    def __init__(self) -> None:
        import ctypes  # noqa: PLC0415 - the only way to prctl from the standard library

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._prctl(_PR_SET_DUMPABLE, 0)
        # Ignored signals are discarded on arrival. SIGCHLD keeps a handler:
        # as init the runner must hear its orphans end to reap them.
        changed: list[int] = []
        for signum in _signal.valid_signals():
            if signum in (_SIGKILL, _SIGSTOP, _SIGCHLD):
                continue
            try:
                _signal.signal(signum, _signal.SIG_IGN)
            except (OSError, ValueError):
                continue
            changed.append(int(signum))
        self.inherited = (*changed, _SIGCHLD)
        """Signals whose disposition the program must get back to the default."""
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        _signal.signal(_SIGCHLD, _on_child)
        program = _seccomp_program(os.uname().machine)
        code = ctypes.create_string_buffer(b"".join(program))

        class SockFprog(ctypes.Structure):
            _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

        self._prctl(
            _PR_SET_SECCOMP,
            _SECCOMP_MODE_FILTER,
            ctypes.byref(SockFprog(len(program), ctypes.cast(code, ctypes.c_void_p))),
        )

    def _prctl(self, *args: object) -> None:
        import ctypes  # noqa: PLC0415 - already loaded by __init__

        if self._libc.prctl(*args, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl{args[:1]}: {os.strerror(errno)}")

    def drain_wakeups(self) -> None:
        """Empty the wake-up pipe (one byte per signal that arrived)."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def name_process(self, name: bytes) -> None:
        """Set this process's name (``/proc/PID/comm``)."""
        self._prctl(_PR_SET_NAME, name)


class _HiddenStream:
    """The host's stream (fds 0 and 1), parked in a Unix socket while the program runs.

    A descriptor in flight is in no process's table, so ``/proc/1/fd`` has
    nothing to offer; fds 0 and 1 point at ``/dev/null`` meanwhile.
    """

    def __init__(self) -> None:
        import _socket  # noqa: PLC0415 - 0.2 ms; the socket module costs far more

        self._socket = _socket
        self._send, self._receive = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sys.stdout.flush()
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1))
        self._send.sendmsg([b"s"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        os.close(null)

    def close_copy(self) -> None:
        """Close this process's ends of the socket (in a forked child)."""
        self._send.close()
        self._receive.close()

    def restore(self) -> None:
        """Put the stream back on fds 0 and 1."""
        _, ancillary, _, _ = self._receive.recvmsg(1, self._socket.CMSG_SPACE(8))
        data = ancillary[0][2]
        for fd, offset in ((0, 0), (1, 4)):
            received = int.from_bytes(data[offset : offset + 4], sys.byteorder)
            os.dup2(received, fd)
            os.close(received)
        self.close_copy()


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]


class _Program:
    """The tool's process: spawned in its own session, its pipes pumped until done.

    The runner is init: every exited child (the program, and orphans handed
    to pid 1) is reaped here, woken by SIGCHLD through the guard's pipe.
    """

    def __init__(self, request: Request, stdin_data: bytes, guard: _Guard) -> None:
        self.guard = guard
        stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, stdout_w = os.pipe()
        self.stderr_r, stderr_w = os.pipe()
        # The runner serves one call: it can move into the workspace itself,
        # which posix_spawn cannot do for the child.
        os.chdir(request.cwd)
        try:
            self.pid = os.posix_spawnp(
                request.argv[0],
                request.argv,
                request.env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                    (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                    (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                ],
                # Its own session: the whole tree dies with one killpg.
                setsid=True,
                # An ignored signal stays ignored across exec: the tool gets
                # the defaults back (Python also ignores SIGPIPE and SIGXFSZ).
                setsigdef=(*guard.inherited, _SIGPIPE, _SIGXFSZ),
            )
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        self.status: int | None = None
        self.captures = {
            self.stdout_r: _Capture(request.output_limit),
            self.stderr_r: _Capture(request.output_limit),
        }
        self.pending = memoryview(stdin_data)
        self.poller = select.poll()
        self.poller.register(guard.wake_r, select.POLLIN)
        self.waker = select.poll()
        self.waker.register(guard.wake_r, select.POLLIN)
        for fd in self.captures:
            try:
                import fcntl  # noqa: PLC0415 - built in, cheap; only here

                fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)
            except OSError:
                pass  # a smaller pipe only costs speed
            self.poller.register(fd, select.POLLIN)
        self.open = set(self.captures)
        if self.pending:
            os.set_blocking(self.stdin_w, False)
            self.poller.register(self.stdin_w, select.POLLOUT)
            self.open.add(self.stdin_w)
        else:
            os.close(self.stdin_w)

    def reap(self) -> bool:
        """Collect every exited child; True once the program itself has exited."""
        self.guard.drain_wakeups()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            # A stop is reported only for a child that asked to be traced;
            # it has not exited.
            if pid == self.pid and not os.WIFSTOPPED(status):
                self.status = status
        return self.status is not None

    def pump(self, deadline: float) -> bool:
        """Pump until the streams close (or go quiet after exit); True if the deadline hit."""
        exited_at: float | None = None
        while self.open:
            now = time.monotonic()
            if now >= deadline:
                return True
            if self.reap() and exited_at is None:
                exited_at = now
            wait = min(deadline - now, _REAP_EVERY_S)
            if exited_at is not None:
                if now - exited_at >= _EXIT_GRACE_S:
                    return False
                wait = min(wait, _EXIT_GRACE_S)
            for fd, _ in self.poller.poll(wait * 1000):
                if fd != self.guard.wake_r:
                    self._step(fd)
        return False

    def _close(self, fd: int) -> None:
        self.poller.unregister(fd)
        self.open.discard(fd)
        os.close(fd)

    def _step(self, fd: int) -> None:
        if fd == self.stdin_w:
            try:
                sent = os.write(fd, self.pending[:_CHUNK])
            except BlockingIOError:
                sent = 0
            except BrokenPipeError:
                sent = len(self.pending)  # the program stopped reading: drop the rest
            self.pending = self.pending[sent:]
            if not self.pending:
                self._close(fd)
            return
        chunk = os.read(fd, _CHUNK)
        if chunk:
            self.captures[fd].feed(chunk)
        else:
            self._close(fd)

    def wait(self, deadline: float) -> bool:
        """Wait for the exit until the deadline; True if it passed first."""
        while not self.reap():
            now = time.monotonic()
            if now >= deadline:
                return True
            self.waker.poll(min(deadline - now, _REAP_EVERY_S) * 1000)
        return False

    def kill_everything_else(self) -> None:
        """SIGKILL every other process in the container, until none is left (bounded).

        What the program left behind could otherwise go on writing into the
        workspace while it is taken. (The filter refuses ``kill(-1)``, to the
        runner too: each process is named.)
        """
        exempt = {_RUNNER_PID, os.getpid()}
        give_up = time.monotonic() + _SWEEP_S
        while True:
            self.reap()
            others = [int(name) for name in os.listdir("/proc") if name.isdigit()]
            others = [pid for pid in others if pid not in exempt]
            if not others or time.monotonic() >= give_up:
                break
            for pid in others:
                try:  # noqa: SIM105 - contextlib would cost start-up time
                    os.kill(pid, _SIGKILL)
                except OSError:
                    pass  # gone already
            # Killed parents hand their zombies to pid 1: wait for them.
            self.waker.poll(_SWEEP_POLL_S * 1000)
        if self.status is None:  # the sweep gave up on it: wait for the SIGKILL it got
            try:  # noqa: SIM105 - contextlib would cost start-up time
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _run(
    request: Request, stdin_data: bytes, guard: _Guard
) -> tuple[dict[str, object], bytes, bytes]:
    started = time.monotonic()
    deadline = started + request.timeout_s
    oom_before = _oom_kills()
    try:
        program = _Program(request, stdin_data, guard)
    except (OSError, IndexError) as exc:
        return {"spawn_error": f"{type(exc).__name__}: {exc}"}, b"", b""
    timed_out = program.pump(deadline)
    # Output closed does not mean exited: the program gets the rest of its
    # deadline. Then whatever it left behind goes.
    timed_out = timed_out or program.wait(deadline)
    program.kill_everything_else()
    status = program.status or 0
    signalled = os.WIFSIGNALED(status)
    stdout, stderr = program.captures[program.stdout_r], program.captures[program.stderr_r]
    report: dict[str, object] = {
        "exit_code": None if signalled else os.WEXITSTATUS(status),
        "signal": os.WTERMSIG(status) if signalled else None,
        "timed_out": timed_out,
        "oom_kills": _oom_kills() - oom_before,
        "duration_s": time.monotonic() - started,
        "stdout_total": stdout.total,
        "stderr_total": stderr.total,
    }
    return report, bytes(stdout.kept), bytes(stderr.kept)


def _start_egress(request: Request, guard: _Guard, stream: _HiddenStream) -> None:
    """Give the tool an HTTP(S) proxy on loopback that leads to the egress socket.

    The forwarder serves in threads of a forked process: in the runner's own
    process the program could signal those threads by their ids (a signal to
    any thread reaches the whole process), which the filter cannot list ahead.
    """
    socket_path = request.env.pop(_EGRESS_SOCKET_ENV, None)
    if not socket_path:
        return
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:  # the forwarder; it never returns into the runner's code
        try:
            _signal.set_wakeup_fd(-1)
            stream.close_copy()
            os.close(ready_r)
            guard.name_process(_EGRESS_PROCESS_NAME)
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from egress_forwarder import start_forwarder  # noqa: PLC0415 - egress calls only

            _listener, port = start_forwarder(socket_path, _EGRESS_PORT)
            os.write(ready_w, str(port).encode())
            os.close(ready_w)
            while True:  # the threads serve until the runner's sweep ends them
                time.sleep(3600)
        finally:
            os._exit(1)
    os.close(ready_w)
    with open(ready_r, "rb") as ready:
        answer = ready.read()
    if not answer:
        raise RuntimeError("the egress forwarder did not start")
    proxy = f"http://127.0.0.1:{int(answer)}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        request.env[name] = proxy
    request.env["NO_PROXY"] = request.env["no_proxy"] = "localhost"


def main() -> int:
    """Serve one request on stdin/stdout, then exit."""
    guard = _Guard()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write_frames(stdout, READY)
    request = Request(_read_frame(stdin, _MAX_HEADER))
    stdin_data = _read_frame(stdin, request.stdin_limit)
    workspace_in = _read_frame(stdin, request.workspace_limit)
    _extract_workspace(workspace_in, request.cwd)
    stream = _HiddenStream()
    _start_egress(request, guard, stream)

    report, out, err = _run(request, stdin_data, guard)
    workspace_out = b""
    if request.return_workspace:
        workspace_out, error = _pack_workspace(request.cwd, request.workspace_limit)
        report["workspace_error"] = error
    stream.restore()
    _write_frames(
        stdout, _json(report).encode("utf-8", "backslashreplace"), out, err, workspace_out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

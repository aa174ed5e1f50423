"""In-container runner: executes exactly one request, then exits.

Standard library only: it runs inside the sandbox image, started as the
container's command and so its init (pid 1). The host speaks to it over the
container's attached stdin/stdout with length-prefixed frames (4-byte
big-endian size, then the payload). The protocol (version 2) is specified in
``docs/runner-protocol.md``; in short:

    ready     runner -> host   b"stockade-ready"                 (once, when up)
    request   host -> runner   header, stdin bytes, workspace entries, end
    response  runner -> host   report JSON, stdout, stderr[, workspace entries, end]
    live      runner -> host   L1/L2 output frames, then L0, on stderr (if asked)

The request header is NUL-separated text (no argument or environment entry
can hold a NUL): version, timeout, output limit, stdin limit, workspace
limit, return-workspace flag, cwd, mode, argc, argv..., envc, KEY=VALUE...

A workspace travels as one frame per entry, parents first, then an empty
frame: ``D<path>`` a directory, ``F<mode>\\0<path>`` a regular file whose
content is the next frame; on the way back also ``K<path>`` (a file this
runner wrote and nobody touched since: the host keeps its own copy, so an
unchanged workspace does not travel back) and ``R<reason>\\0<path>`` (an
entry the runner does not send: a link, FIFO, socket or device). Nothing
here is trusted by the host; it validates every entry as hostile.

Mode ``exec`` runs argv. Mode ``tool`` says argv is the SDK's tool entry
point (``python3 -S -m stockade_sdk.run MODULE:FUNCTION``). An image whose
command names ``--tool-host LIBRARY`` has this runner fork the SDK's tool
host (:func:`stockade_sdk.host.main_forked`, what ``python3 -m
stockade_sdk.host`` would run) before it says ready: a process with the SDK
and the toolkits already imported, waiting for one request on its stdin.
A ``tool`` request then goes to it instead of a new interpreter (the result
is the same, minus the start-up); any other request, or a host that is gone,
gets argv spawned, and an idle host is killed first (its process group:
with it the snippet process it forks ahead of a ``python.run`` call). The
host serves one call and exits; the container still serves one request.

A pooled container has paid for everything here before its request
arrives; what a call pays for is kept small: this file imports only built-in
modules (no ``subprocess``, ``json`` or ``selectors``), frames go through
raw descriptors, and file content moves with ``sendfile`` where it can.

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
  it starts (the tool host included), that refuses the calls acting on pid 1
  (kill, tkill, tgkill, sigqueue, pidfd, ptrace, process_vm_*, prlimit) and
  ``kill(-1)``. runc's kernel already drops signals sent to a namespace's
  init from inside, but gVisor delivers even SIGKILL and SIGSTOP;
- keeps the host's stream out of its descriptor table while the tool runs
  (in flight inside a Unix socket): gVisor lets a same-uid process open
  ``/proc/1/fd/N`` even when pid 1 is not dumpable, and a socket cannot be
  opened through ``/proc``. The tool host never holds it: it is spawned with
  its own pipes, and only trusted code (the SDK, the toolkits) runs in it
  before the stream is hidden;
- runs the egress forwarder, whose threads the filter could not name, in a
  forked process of its own.

The tool host gets nothing a spawned tool process would not: the same uid,
filter, limits and environment (it receives the request's), in its own
session like any program, with only its own descriptors and a new
interpreter's signal dispositions. It is forked, not started: the runner's
memory it shares holds nothing yet (no request has arrived). It makes itself
non-dumpable, so what the tool runs (a ``python.run`` snippet, forked from
it) cannot read or write its memory either.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

# Importing typing costs start-up time; mypy evaluates this block anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same calls, typed (the C module has no stubs)
    from collections.abc import Callable
    from types import FrameType

    # syscall number -> (argument naming the target or None, values refused)
    _Rules = dict[int, tuple[int | None, tuple[int, ...]]]
    # path -> (inode, size, mtime ns, ctime ns) of each file the runner wrote
    _Snapshot = dict[bytes, tuple[int, int, int, int]]
    # (entry frame, file to send or None, its size)
    _Listing = list[tuple[bytes, bytes | None, int]]
else:
    import _signal  # the signal module imports enum: 4 ms here, 14 ms under gVisor

PROTOCOL_VERSION = "2"
READY = b"stockade-ready"
MODE_EXEC, MODE_TOOL = "exec", "tool"
_LEN_BYTES = 4
_MAX_HEADER = 1 << 20
_MAX_ENTRY = 64 * 1024  # one workspace entry's kind, fields and path
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
_SIGINT, _SIGKILL, _SIGPIPE, _SIGCHLD, _SIGSTOP, _SIGXFSZ = 2, 9, 13, 17, 19, 25
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
# Set on the container by the host (never by a request) for every program:
# the thread count numeric libraries should use, the container's CPU quota
# (they count the machine's cores). A request's own value wins.
_THREADS_ENV = "OMP_NUM_THREADS"
_EGRESS_SOCKET_ENV = "STOCKADE_EGRESS_SOCKET"
_EGRESS_PORT = 3128
# The SDK leaves processes by this name out of what a tool left behind.
_EGRESS_PROCESS_NAME = b"stockade-egress"
_TOOL_HOST_FLAG = "--tool-host"
_TOOL_HOST_READY_FD = 3
_PRELOAD_ENV = "STOCKADE_PRELOAD"
_LEAN_START_ENV = "STOCKADE_LEAN_START"
_TOOLKITS_ENV = "STOCKADE_TOOLKITS"
# Set by the host in a request's environment (and removed here) to ask for
# live output frames: its value is how many bytes of output may stream.
_LIVE_ENV = "STOCKADE_LIVE_OUTPUT"
_LIVE_TAG = b"L"
_LIVE_FRAME = 16 * 1024  # largest chunk in one live frame
_LIVE_TAIL = 8 * 1024  # latest output past the cap in one tail frame
_LIVE_END = b"L0"  # the last live frame: nothing follows on the live stream
_LIVE_FD = 2  # live frames go to the container's stderr, not the host's stream
_LIVE_BYTES = 4 * 1024  # a stream's pending output is sent once this much waits...
_LIVE_EVERY_S = 0.05  # ...or this long after the last send
# Output after a quiet spell waits this long for the rest of its write (print
# writes a line and its newline apart when unbuffered), not the 50 ms.
_LIVE_LINGER_S = 0.005
_UNBUFFERED = "PYTHONUNBUFFERED"
# A host still importing after this long is given up (requests are spawned).
_TOOL_HOST_START_S = 20.0

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


def _with_container_env(env: dict[str, str], *names: str) -> dict[str, str]:
    """``env`` plus those of ``names`` set in the container's environment (by its creator only)."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            env[name] = value
    return env


def _base_env() -> dict[str, str]:
    """What every program's environment starts from (a request's entries go over it)."""
    return _with_container_env(dict(_BASE_ENV), _THREADS_ENV)


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
        self.mode = fields[7]
        if self.mode not in (MODE_EXEC, MODE_TOOL):
            raise ValueError(f"unknown mode {self.mode!r}")
        argc = int(fields[8])
        self.argv = fields[9 : 9 + argc]
        envc = int(fields[9 + argc])
        self.env = _base_env()
        for entry in fields[10 + argc : 10 + argc + envc]:
            key, _, value = entry.partition("=")
            self.env[key] = value
        live = self.env.pop(_LIVE_ENV, "")
        self.live_cap = int(live) if live.isdigit() else 0
        if self.mode == MODE_TOOL or self.live_cap:
            # Output is worth streaming (and keeping at a kill) only if programs
            # write it as it comes. The tool host runs with the same setting, so
            # python.run still forks from it.
            self.env.setdefault(_UNBUFFERED, "1")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_pipe_size(fd: int) -> None:
    try:
        import fcntl  # noqa: PLC0415 - built in, cheap; only here

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)
    except OSError:
        pass  # not a pipe, or a smaller one: it only costs speed


class _Channel:
    """Frames over the host's stream: fd 0 in, fd 1 out, without Python's buffered files.

    Raw descriptors let a file's content go from the stream to the workspace
    and back in large chunks (``sendfile`` on the way out), and survive
    :class:`_HiddenStream` moving fds 0 and 1 away and back.
    """

    def __init__(self) -> None:
        self._in = bytearray()
        self._out = bytearray()
        for fd in (0, 1):
            os.set_blocking(fd, True)
            _set_pipe_size(fd)

    def _fill(self, size: int) -> None:
        while len(self._in) < size:
            # Reading ahead is safe: the host sends nothing after its request.
            chunk = os.read(0, max(size - len(self._in), _CHUNK))
            if not chunk:
                raise EOFError(f"stdin closed with {size - len(self._in)} bytes missing")
            self._in += chunk

    def _size(self, limit: int) -> int:
        self._fill(_LEN_BYTES)
        size = int.from_bytes(self._in[:_LEN_BYTES], "big")
        del self._in[:_LEN_BYTES]
        if size > limit:
            raise ValueError(f"frame of {size} bytes exceeds {limit}")
        return size

    def frame(self, limit: int) -> bytes:
        """The next frame's payload, at most ``limit`` bytes."""
        size = self._size(limit)
        self._fill(size)
        data = bytes(self._in[:size])
        del self._in[:size]
        return data

    def frame_to(self, fd: int, limit: int) -> tuple[int, OSError | None]:
        """Copy the next frame's payload (at most ``limit`` bytes) into ``fd``.

        Returns its size and the error that stopped the writing, if any; the
        frame is read to its end either way, so the stream stays in step.
        """
        size = self._size(limit)
        failure: OSError | None = None
        buffered = min(size, len(self._in))
        try:
            _write_all(fd, self._in[:buffered])
        except OSError as exc:
            failure = exc
        del self._in[:buffered]
        remaining = size - buffered
        while remaining:
            chunk = os.read(0, min(remaining, _CHUNK))
            if not chunk:
                raise EOFError(f"stdin closed with {remaining} bytes of a file missing")
            remaining -= len(chunk)
            if failure is None:
                try:
                    _write_all(fd, chunk)
                except OSError as exc:
                    failure = exc
        return size, failure

    def send(self, payload: bytes) -> None:
        """Queue one frame (written on :meth:`flush`, or when the queue grows large)."""
        self._out += len(payload).to_bytes(_LEN_BYTES, "big")
        self._out += payload
        if len(self._out) >= _CHUNK:
            self.flush()

    def send_file(self, path: bytes, size: int) -> None:
        """One frame holding ``size`` bytes of the file at ``path``.

        The size was announced by the listing; a file that changed since
        (only if the sweep gave up on a process) is cut or padded to it, so
        the stream stays in step. The host checks what it gets either way.
        """
        self._out += size.to_bytes(_LEN_BYTES, "big")
        self.flush()
        sent = 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                sent = self._copy(fd, size)
            finally:
                os.close(fd)
        if sent < size:
            _write_all(1, bytes(size - sent))

    @staticmethod
    def _copy(fd: int, size: int) -> int:
        sent = 0
        try:
            while sent < size:
                done = os.sendfile(1, fd, sent, min(size - sent, 1 << 30))
                if not done:
                    return sent
                sent += done
        except OSError:
            # No sendfile into this descriptor: copy through memory instead.
            while sent < size:
                chunk = os.pread(fd, min(size - sent, _CHUNK), sent)
                if not chunk:
                    break
                _write_all(1, chunk)
                sent += len(chunk)
        return sent

    def flush(self) -> None:
        """Write every queued frame."""
        if self._out:
            _write_all(1, self._out)
            self._out.clear()


def _entry_path(header: bytes) -> bytes:
    """The path of an entry from the host, normalised; refused if it could leave the root."""
    path = header.rpartition(b"\0")[2] if b"\0" in header else header[1:]
    parts = [part for part in path.split(b"/") if part not in (b"", b".")]
    if not parts or b".." in parts or path.startswith(b"/"):
        raise ValueError(f"workspace entry {path!r} leaves the workspace")
    return b"/".join(parts)


def _receive_workspace(channel: _Channel, root: str, limit: int) -> tuple[_Snapshot, str | None]:
    """Write the host's workspace entries under ``root``; what was written, or why it failed.

    The host sends only what it validated, parents first; stay strict anyway.
    After a failure (say, the workspace's tmpfs is full) the remaining
    entries are still read, so the stream stays in step.
    """
    snapshot: _Snapshot = {}
    base = os.fsencode(root) + b"/"
    room = limit
    error: OSError | None = None
    while header := channel.frame(_MAX_ENTRY):
        kind, path = header[:1], _entry_path(header)
        if kind == b"D":
            if error is None:
                try:
                    os.makedirs(base + path, exist_ok=True)
                except OSError as exc:
                    error = exc
            continue
        if kind != b"F":
            raise ValueError(f"unknown workspace entry {header[:40]!r}")
        fd = -1
        if error is None:
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(base + path, flags, 0o600)
            except OSError as exc:
                error = exc
        if fd < 0:
            channel.frame(room)  # read past it
            continue
        try:
            size, error = channel.frame_to(fd, room)
            room -= size
            if error is None:
                os.fchmod(fd, int(header[1 : header.index(b"\0")], 8) & 0o755 | 0o600)
                # Taken after the last change: ctime moves on any later write,
                # chmod or utime, and userspace cannot set it back.
                info = os.fstat(fd)
                snapshot[path] = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        finally:
            os.close(fd)
    if error is not None:
        return snapshot, f"the workspace could not be copied in: {error.strerror or error}"
    return snapshot, None


def _describe(info: os.stat_result, path: bytes) -> str | None:
    """Why an entry that is neither a file nor a directory is not sent back."""
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = b"?"
        return f"symbolic link to {os.fsdecode(target)!r}"
    if stat.S_ISFIFO(info.st_mode):
        return "FIFO"
    if stat.S_ISSOCK(info.st_mode):
        return "socket"
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        return "device file"
    return None


def _list_workspace(root: str, snapshot: _Snapshot, limit: int) -> tuple[_Listing, str | None]:
    """Every entry under ``root``, parents first and sorted; or why it cannot go back.

    Files this runner wrote and nobody changed since (same inode, size, mtime
    and ctime; userspace cannot set ctime) become ``K`` entries: the host
    keeps its copy. Nothing is followed: links are reported, not read.
    """
    base = os.fsencode(root)
    listing: _Listing = []
    total = 0
    first_name: dict[tuple[int, int], bytes] = {}
    pending = [b""]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(base + b"/" + directory if directory else base) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            return [], f"workspace could not be read: {exc}"
        subdirectories = []
        for entry in entries:
            path = directory + b"/" + entry.name if directory else entry.name
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                listing.append((b"D" + path, None, 0))
                subdirectories.append(path)
                continue
            if not stat.S_ISREG(info.st_mode):
                said = _describe(info, entry.path) or "unsupported entry type"
                listing.append((b"R" + os.fsencode(said) + b"\0" + path, None, 0))
                continue
            if info.st_nlink > 1:
                first = first_name.setdefault((info.st_dev, info.st_ino), path)
                if first != path:
                    said = f"hard link to {os.fsdecode(first)!r}"
                    listing.append((b"R" + os.fsencode(said) + b"\0" + path, None, 0))
                    continue
            total += info.st_size
            if total > limit:
                return [], f"workspace exceeds its quota of {limit} bytes"
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if snapshot.get(path) == stamp:
                listing.append((b"K" + path, None, 0))
            else:
                mode = f"{stat.S_IMODE(info.st_mode):o}".encode()
                listing.append((b"F" + mode + b"\0" + path, entry.path, info.st_size))
        # Depth first, parents before children, in sorted order.
        pending.extend(reversed(subdirectories))
    return listing, None


def _send_workspace(channel: _Channel, listing: _Listing) -> None:
    for header, source, size in listing:
        channel.send(header)
        if source is not None:
            channel.send_file(source, size)
    channel.send(b"")


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

    def reap(self) -> list[tuple[int, int]]:
        """Collect every exited child (pid 1 collects orphans too): pids and wait statuses."""
        self.drain_wakeups()
        reaped = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            reaped.append((pid, status))
        return reaped

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

    def _take(self) -> tuple[int, int]:
        _, ancillary, _, _ = self._receive.recvmsg(1, self._socket.CMSG_SPACE(8))
        data = ancillary[0][2]
        return (
            int.from_bytes(data[0:4], sys.byteorder),
            int.from_bytes(data[4:8], sys.byteorder),
        )

    def restore(self) -> None:
        """Put the stream back on fds 0 and 1."""
        for fd, received in zip((0, 1), self._take(), strict=True):
            os.dup2(received, fd)
            os.close(received)
        self.close_copy()


class _Capture:
    """Keeps the first ``limit`` bytes of a stream, the last ``limit // 2``, and counts all.

    A call that ends normally reports its first ``limit`` bytes; one killed
    at its deadline reports head and tail (:meth:`head_and_tail`), so what it
    printed last, which says how far it got, is not lost.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: -(self.limit // 2)]

    def head_and_tail(self) -> tuple[bytes, int | None]:
        """At most ``limit`` bytes: head, then tail; and where the omission is (None: none)."""
        if not self.tail:
            return bytes(self.kept), None
        cut = self.limit - len(self.tail)
        return bytes(self.kept[:cut] + self.tail), cut


class _Live:
    """The program's output as live frames, coalesced and capped (see the protocol doc).

    Frames go to fd 2, the container's stderr, which the host attaches as a
    stream of its own: never to the hidden stream, so it is not taken out of
    its socket while the program runs. Under gVisor the program can open
    ``/proc/1/fd/2`` and write there too; it can forge only display text.
    """

    def __init__(self, cap: int, *, tool: bool) -> None:
        self.room = cap
        os.set_blocking(_LIVE_FD, True)
        # A tool's stdout carries its result line, not output for people: a tool
        # passes its program's output on through stderr (stockade_sdk.process).
        self.tool = tool
        self.pending: dict[bytes, bytearray] = {b"1": bytearray(), b"2": bytearray()}
        self.tail = bytearray()
        self.past = 0  # bytes that came past the cap
        self.last = 0.0
        self.due: float | None = None

    def feed(self, which: bytes, chunk: bytes) -> None:
        if self.tool and which == b"1":
            return
        now = time.monotonic()
        if self.room <= 0:
            # Past the cap only the latest bytes go on (in tail frames, at the
            # same pace): what the host keeps should the sandbox die at once.
            self.past += len(chunk)
            self.tail += chunk[-_LIVE_TAIL:]
            del self.tail[:-_LIVE_TAIL]
        else:
            chunk = chunk[: self.room]
            self.room -= len(chunk)
            self.pending[which] += chunk
            if len(self.pending[which]) >= _LIVE_BYTES:
                self.send(now)
                return
        if self.due is None:
            self.due = max(self.last + _LIVE_EVERY_S, now + _LIVE_LINGER_S)

    def frames(self) -> bytes:
        """Every pending chunk as frames, emptied."""
        out = bytearray()
        for which, data in self.pending.items():
            for start in range(0, len(data), _LIVE_FRAME):
                piece = data[start : start + _LIVE_FRAME]
                out += (len(piece) + 2).to_bytes(_LEN_BYTES, "big") + _LIVE_TAG + which + piece
            data.clear()
        if self.tail:
            tail = b"T" + str(self.past).encode() + b"\0" + self.tail
            out += (len(tail) + 1).to_bytes(_LEN_BYTES, "big") + _LIVE_TAG + tail
            self.tail.clear()
        self.due = None
        return bytes(out)

    def send(self, now: float) -> None:
        """Send what is pending on the live stream."""
        self.last = now
        data = self.frames()
        if data:
            self._write(data)

    def finish(self) -> None:
        """Send what is left, then the end frame (the host stops waiting for more)."""
        self._write(self.frames() + (2).to_bytes(_LEN_BYTES, "big") + _LIVE_END)

    @staticmethod
    def _write(data: bytes) -> None:
        try:  # noqa: SIM105 - contextlib costs start-up time
            _write_all(_LIVE_FD, data)
        except OSError:
            pass  # nobody reads the live stream: it is display only


class _Pipes:
    """A child's stdin, stdout and stderr: its ends and the runner's."""

    def __init__(self) -> None:
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()
        for fd in (self.stdout_r, self.stderr_r):
            _set_pipe_size(fd)

    def spawn(self, argv: list[str], env: dict[str, str], guard: _Guard) -> int:
        """Start ``argv`` on the child's ends, in its own session; close those ends here."""
        actions = [
            (os.POSIX_SPAWN_DUP2, self.stdin_r, 0),
            (os.POSIX_SPAWN_DUP2, self.stdout_w, 1),
            (os.POSIX_SPAWN_DUP2, self.stderr_w, 2),
        ]
        try:
            return os.posix_spawnp(
                argv[0],
                argv,
                env,
                file_actions=actions,
                # Its own session: the whole tree dies with one killpg.
                setsid=True,
                # An ignored signal stays ignored across exec: the child gets
                # the defaults back (Python also ignores SIGPIPE and SIGXFSZ).
                setsigdef=(*guard.inherited, _SIGPIPE, _SIGXFSZ),
            )
        finally:
            self._close_child_ends()

    def fork_host(self, library: str, env: dict[str, str], guard: _Guard, ready_w: int) -> int:
        """Fork the SDK's tool host on the child's ends, in its own session; close those ends.

        A fork, not a new interpreter: this one is up, and starting another
        cost every pooled container ~8 ms of CPU (and a call that waits for
        its container as much time). Nothing of the runner's goes with it
        that a spawned program would not get: no request exists yet, the
        descriptors are closed but its own, the signals are a new
        interpreter's, and the filter and uid are the same.
        """
        try:
            pid = os.fork()
        except OSError:
            self._close_child_ends()
            raise
        if pid == 0:  # the host; it never returns into the runner's code
            try:
                _signal.set_wakeup_fd(-1)
                os.setsid()
                for fd, target in (
                    (self.stdin_r, 0),
                    (self.stdout_w, 1),
                    (self.stderr_w, 2),
                    (ready_w, _TOOL_HOST_READY_FD),
                ):
                    os.dup2(fd, target)
                os.closerange(_TOOL_HOST_READY_FD + 1, os.sysconf("SC_OPEN_MAX"))
                # As a new interpreter has them: SIGINT raises, SIGPIPE and
                # SIGXFSZ are ignored (errors instead), the rest are defaults.
                for signum in guard.inherited:
                    _signal.signal(signum, _signal.SIG_DFL)
                _signal.signal(_SIGINT, _signal.default_int_handler)
                for signum in (_SIGPIPE, _SIGXFSZ):
                    _signal.signal(signum, _signal.SIG_IGN)
                os.environ.clear()
                os.environ.update(env)
                # Where python3 -m would look: the directory it started in, then PYTHONPATH.
                sys.path[:0] = [os.getcwd(), library]
                from stockade_sdk import host  # noqa: PLC0415 - in the host only

                host.main_forked()
            finally:
                os._exit(1)
        self._close_child_ends()
        return pid

    def _close_child_ends(self) -> None:
        for fd in (self.stdin_r, self.stdout_w, self.stderr_w):
            os.close(fd)

    def close(self) -> None:
        """Close the runner's ends."""
        for fd in (self.stdin_w, self.stdout_r, self.stderr_r):
            os.close(fd)


class _Program:
    """The tool's process, its pipes pumped until done.

    Spawned for the request, or the tool host started before it, whose
    request is then what its stdin receives. The runner is init: every
    exited child (the program, and orphans handed to pid 1) is reaped here,
    woken by SIGCHLD through the guard's pipe.
    """

    def __init__(
        self, pid: int, pipes: _Pipes, stdin_data: bytes, output_limit: int, guard: _Guard
    ) -> None:
        self.guard = guard
        self.pid = pid
        self.stdin_w, self.stdout_r, self.stderr_r = pipes.stdin_w, pipes.stdout_r, pipes.stderr_r
        self.status: int | None = None
        self.captures = {
            self.stdout_r: _Capture(output_limit),
            self.stderr_r: _Capture(output_limit),
        }
        self.pending = memoryview(stdin_data)
        self.live: _Live | None = None
        self.poller = select.poll()
        self.poller.register(guard.wake_r, select.POLLIN)
        self.waker = select.poll()
        self.waker.register(guard.wake_r, select.POLLIN)
        for fd in self.captures:
            self.poller.register(fd, select.POLLIN)
        self.open = set(self.captures)
        if self.pending:
            os.set_blocking(self.stdin_w, False)
            self.poller.register(self.stdin_w, select.POLLOUT)
            self.open.add(self.stdin_w)
        else:
            os.close(self.stdin_w)

    @classmethod
    def spawn(cls, request: Request, stdin_data: bytes, guard: _Guard) -> _Program:
        """Start ``request.argv`` in the workspace."""
        pipes = _Pipes()
        # The runner serves one call: it can move into the workspace itself,
        # which posix_spawn cannot do for the child.
        try:
            os.chdir(request.cwd)
            pid = pipes.spawn(request.argv, request.env, guard)
        except BaseException:
            pipes.close()
            raise
        return cls(pid, pipes, stdin_data, request.output_limit, guard)

    def reap(self) -> bool:
        """Collect every exited child; True once the program itself has exited."""
        for pid, status in self.guard.reap():
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
            live = self.live
            if live is not None and live.due is not None:
                if now >= live.due:
                    live.send(now)
                else:
                    wait = min(wait, live.due - now)
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
            if self.live is not None:
                self.live.feed(b"1" if fd == self.stdout_r else b"2", chunk)
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


def _in_group(pgid: int) -> bool:
    """Whether a process of group ``pgid`` (a zombie included) is still there."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # gone meanwhile
        # After the name, which may hold anything: state, ppid, pgrp.
        if int(stat[stat.rindex(b")") + 2 :].split()[2]) == pgid:
            return True
    return False


def _reap_group(pgid: int, guard: _Guard) -> None:
    """Reap a killed group's processes until none is left (bounded).

    A child of the group's leader comes to pid 1 when the leader dies
    first: it is this process's to collect then.
    """
    waker = select.poll()
    waker.register(guard.wake_r, select.POLLIN)
    give_up = time.monotonic() + _SWEEP_S
    while True:
        guard.reap()
        if not _in_group(pgid) or time.monotonic() >= give_up:
            return
        waker.poll(_SWEEP_POLL_S * 1000)


def _host_message(request: Request, stdin_data: bytes) -> bytes:
    """What the tool host reads on its stdin: two frames, the call and its stdin.

    The call is NUL-separated: cwd, argc, argv..., envc, KEY=VALUE... The
    frames delimit themselves, so the host never waits for an end of file
    (a forked process could hold a copy of the pipe's other end).
    """
    fields = [
        request.cwd,
        str(len(request.argv)),
        *request.argv,
        str(len(request.env)),
        *(f"{key}={value}" for key, value in request.env.items()),
    ]
    call = "\0".join(fields).encode("utf-8", "surrogateescape")
    return b"".join(
        (
            len(call).to_bytes(_LEN_BYTES, "big"),
            call,
            len(stdin_data).to_bytes(_LEN_BYTES, "big"),
            stdin_data,
        )
    )


class _ToolHost:
    """The SDK's tool host, started before the request (see the module docstring).

    It imports the SDK and the toolkits, makes itself non-dumpable, writes
    one byte to fd 3 and waits for its one request on stdin.
    """

    def __init__(self, library: str, guard: _Guard) -> None:
        self.guard = guard
        self.pipes = _Pipes()
        self.pid: int | None = None
        ready_r, ready_w = os.pipe()
        try:
            # The profile's toolkit and preload lists and whether a caller
            # already waits, set on the container by the host (never by a
            # request): what the tool host imports before the call.
            env = _with_container_env(
                dict(_base_env(), PYTHONPATH=library, PYTHONUNBUFFERED="1"),
                _TOOLKITS_ENV,
                _PRELOAD_ENV,
                _LEAN_START_ENV,
            )
            self.pid = self.pipes.fork_host(library, env, guard, ready_w)
        except OSError:
            self.pipes.close()
        finally:
            os.close(ready_w)
        try:
            if self.pid is not None and not self._says_ready(ready_r):
                self.discard()
        finally:
            os.close(ready_r)

    @staticmethod
    def _says_ready(ready_r: int) -> bool:
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        if not poller.poll(_TOOL_HOST_START_S * 1000):
            return False
        try:
            return os.read(ready_r, 1) == b"1"
        except OSError:
            return False

    def waiting(self) -> bool:
        """True while the host is up and has no request yet."""
        if self.pid is None:
            return False
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid:  # it ended before its request
            self.pid = None
            self.pipes.close()
        return self.pid is not None

    def discard(self) -> None:
        """Kill the host, unused, with what it forked ahead: the request is not theirs to serve."""
        if self.pid is None:
            return
        try:  # noqa: SIM105 - contextlib costs start-up time
            # Its group (it is the leader): the host and the snippet process
            # it forks before a call (stockade_sdk._spare), which stays in
            # the group until it has a call.
            os.killpg(self.pid, _SIGKILL)
        except OSError:
            pass  # gone already
        _reap_group(self.pid, self.guard)
        self.pid = None
        self.pipes.close()

    def close_copies(self) -> None:
        """Close the runner's ends of the host's pipes (in a forked child)."""
        if self.pid is not None:
            self.pipes.close()

    def take(self, request: Request, stdin_data: bytes) -> _Program:
        """Hand the request to the host: it becomes the call's program."""
        assert self.pid is not None
        program = _Program(
            self.pid,
            self.pipes,
            _host_message(request, stdin_data),
            request.output_limit,
            self.guard,
        )
        self.pid = None
        return program


def _run(
    request: Request, start: Callable[[], _Program], live: _Live | None
) -> tuple[dict[str, object], bytes, bytes]:
    started = time.monotonic()
    deadline = started + request.timeout_s
    oom_before = _oom_kills()
    try:
        program = start()
    except (OSError, IndexError) as exc:
        return {"spawn_error": f"{type(exc).__name__}: {exc}"}, b"", b""
    program.live = live
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
    if not timed_out:
        return report, bytes(stdout.kept), bytes(stderr.kept)
    # Killed at its deadline: what it printed last says how far it got.
    out, report["stdout_cut"] = stdout.head_and_tail()
    err, report["stderr_cut"] = stderr.head_and_tail()
    return report, out, err


def _start_egress(
    request: Request, guard: _Guard, stream: _HiddenStream, host: _ToolHost | None
) -> None:
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
            if host is not None:
                host.close_copies()
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


def _tool_host_library(args: list[str]) -> str | None:
    """The library directory named by ``--tool-host DIR``, or None."""
    if not args:
        return None
    if len(args) != 2 or args[0] != _TOOL_HOST_FLAG:
        raise ValueError(f"usage: runner.py [{_TOOL_HOST_FLAG} LIBRARY], got {args!r}")
    return args[1]


def main(args: list[str] | None = None) -> int:
    """Serve one request on stdin/stdout, then exit."""
    library = _tool_host_library(sys.argv[1:] if args is None else args)
    guard = _Guard()
    channel = _Channel()
    host = _ToolHost(library, guard) if library else None
    channel.send(READY)
    channel.flush()
    request = Request(channel.frame(_MAX_HEADER))
    stdin_data = channel.frame(request.stdin_limit)
    snapshot, copy_error = _receive_workspace(channel, request.cwd, request.workspace_limit)
    stream = _HiddenStream()
    _start_egress(request, guard, stream, host)
    live = _Live(request.live_cap, tool=request.mode == MODE_TOOL) if request.live_cap else None

    report: dict[str, object]
    if copy_error is not None:
        # Nothing ran; the host keeps the workspace it has.
        report, out, err = {"spawn_error": copy_error, "workspace_error": copy_error}, b"", b""
    else:
        served = host is not None and request.mode == MODE_TOOL and host.waiting()
        if host is not None and not served:
            host.discard()  # nothing may run beside the program but what it starts
        start = (
            (lambda: host.take(request, stdin_data))
            if served and host is not None
            else (lambda: _Program.spawn(request, stdin_data, guard))
        )
        report, out, err = _run(request, start, live)
    listing: _Listing = []
    if request.return_workspace and copy_error is None and not report.get("timed_out"):
        # After a timeout the host keeps its workspace: nothing to list.
        listing, report["workspace_error"] = _list_workspace(
            request.cwd, snapshot, request.workspace_limit
        )
    if live is not None:  # what came in since the last live frame, before the report
        live.finish()
    stream.restore()
    channel.send(_json(report).encode("utf-8", "backslashreplace"))
    channel.send(out)
    channel.send(err)
    if request.return_workspace:
        _send_workspace(channel, listing)
    channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

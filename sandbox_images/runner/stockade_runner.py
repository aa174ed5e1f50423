"""In-container runner: executes exactly one request, then exits.

Standard library only: it runs inside the sandbox image, started as the
container's command under the init process. The host speaks to it over the
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

The host treats everything this process sends as hostile (the tool runs with
the same uid and could forge it), so nothing here is trusted for safety; this
file only does the work and reports honestly when not tampered with.
"""

from __future__ import annotations

import os
import select
import sys
import time

# Importing typing costs start-up time; mypy evaluates this block anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

PROTOCOL_VERSION = "1"
READY = b"stockade-ready"
_LEN_BYTES = 4
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: bigger pipes mean fewer reads of a flood
# After the tool's main process exits, background children that still hold
# its stdout/stderr get this long to finish writing before they are killed.
_EXIT_GRACE_S = 0.05
_POLL_S = 0.002
_OOM_FILES = (
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
    "/sys/fs/cgroup/memory.events",  # cgroup v2
)
# Linux signal numbers: the signal module imports enum, which costs more
# start-up time than the rest of this file.
_SIGKILL, _SIGPIPE, _SIGXFSZ = 9, 13, 25
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_EGRESS_SOCKET_ENV = "STOCKADE_EGRESS_SOCKET"
_EGRESS_PORT = 3128


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
    """The tool's process: spawned in its own session, its pipes pumped until done."""

    def __init__(self, request: Request, stdin_data: bytes) -> None:
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
                # Python ignores SIGPIPE; the tool must get the default back.
                setsigdef=(_SIGPIPE, _SIGXFSZ),
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

    def poll_exit(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def pump(self, deadline: float) -> bool:
        """Pump until the streams close (or go quiet after exit); True if the deadline hit."""
        exited_at: float | None = None
        while self.open:
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and self.poll_exit():
                exited_at = now
            wait = min(deadline - now, 0.1)
            if exited_at is not None:
                if now - exited_at >= _EXIT_GRACE_S:
                    return False
                wait = min(wait, _EXIT_GRACE_S)
            for fd, _ in self.poller.poll(wait * 1000):
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
        while not self.poll_exit():
            if time.monotonic() >= deadline:
                return True
            time.sleep(_POLL_S)
        return False

    def kill_group(self) -> None:
        try:  # noqa: SIM105 - contextlib would cost start-up time
            os.killpg(self.pid, _SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)


def _run(request: Request, stdin_data: bytes) -> tuple[dict[str, object], bytes, bytes]:
    started = time.monotonic()
    deadline = started + request.timeout_s
    oom_before = _oom_kills()
    try:
        program = _Program(request, stdin_data)
    except (OSError, IndexError) as exc:
        return {"spawn_error": f"{type(exc).__name__}: {exc}"}, b"", b""
    timed_out = program.pump(deadline)
    # Output closed does not mean exited: the program gets the rest of its
    # deadline. Then whatever is left of its process group goes.
    timed_out = timed_out or program.wait(deadline)
    program.kill_group()
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


def _start_egress(request: Request) -> None:
    """Give the tool an HTTP(S) proxy on loopback that leads to the egress socket."""
    socket_path = request.env.pop(_EGRESS_SOCKET_ENV, None)
    if not socket_path:
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from egress_forwarder import start_forwarder  # noqa: PLC0415 - egress calls only

    _listener, port = start_forwarder(socket_path, _EGRESS_PORT)
    proxy = f"http://127.0.0.1:{port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        request.env[name] = proxy
    request.env["NO_PROXY"] = request.env["no_proxy"] = "localhost"


def main() -> int:
    """Serve one request on stdin/stdout, then exit."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write_frames(stdout, READY)
    request = Request(_read_frame(stdin, _MAX_HEADER))
    stdin_data = _read_frame(stdin, request.stdin_limit)
    workspace_in = _read_frame(stdin, request.workspace_limit)
    _extract_workspace(workspace_in, request.cwd)
    _start_egress(request)

    report, out, err = _run(request, stdin_data)
    workspace_out = b""
    if request.return_workspace:
        workspace_out, error = _pack_workspace(request.cwd, request.workspace_limit)
        report["workspace_error"] = error
    _write_frames(
        stdout, _json(report).encode("utf-8", "backslashreplace"), out, err, workspace_out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""In-container runner: executes exactly one request, then exits.

Standard library only: it runs inside the sandbox image, started as the
container's command under the init process. The host speaks to it over the
container's attached stdin/stdout with length-prefixed frames:

    ready    runner -> host   {"ready": true}                  (once, at start)
    request  host -> runner   header JSON, stdin bytes, workspace tar
    response runner -> host   header JSON, stdout, stderr, workspace tar

Every frame is a 4-byte big-endian length followed by that many bytes. The
host treats everything this process sends as hostile (the tool runs with the
same uid and could forge it), so nothing here is trusted for safety; this
file only does the work and reports honestly when not tampered with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from typing import Any, BinaryIO

_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: bigger pipes mean fewer reads of a flood
# After the tool's main process exits, background children that still hold
# its stdout/stderr get this long to finish writing before they are killed.
_EXIT_GRACE_S = 0.05
_OOM_FILES = (
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
    "/sys/fs/cgroup/memory.events",  # cgroup v2
)


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
    (size,) = _LEN.unpack(_read_exact(stream, _LEN.size))
    if size > limit:
        raise ValueError(f"frame of {size} bytes exceeds {limit}")
    return _read_exact(stream, size)


def _write_frames(stream: BinaryIO, *payloads: bytes) -> None:
    for payload in payloads:
        stream.write(_LEN.pack(len(payload)))
        stream.write(payload)
    stream.flush()


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


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _spawn(request: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    env.update(request.get("env") or {})
    process = subprocess.Popen(
        request["argv"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=request.get("cwd") or "/workspace",
        env=env,
        # Its own session: the whole tree is killed with one killpg.
        start_new_session=True,
    )
    for pipe in (process.stdout, process.stderr):
        with contextlib.suppress(OSError):  # a smaller pipe only costs speed
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _CHUNK)  # type: ignore[union-attr]
    return process


class _Pump:
    """Feeds stdin and drains stdout/stderr until the program is done or out of time."""

    def __init__(self, process: subprocess.Popen[bytes], stdin_data: bytes, limit: int) -> None:
        assert process.stdin and process.stdout and process.stderr
        self.process = process
        self.captures = {"stdout": _Capture(limit), "stderr": _Capture(limit)}
        self.selector = selectors.DefaultSelector()
        self.selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        self.pending = memoryview(stdin_data)
        if self.pending:
            os.set_blocking(process.stdin.fileno(), False)
            self.selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            process.stdin.close()

    def run(self, deadline: float) -> bool:
        """Pump until the streams close (or go quiet after exit); True if the deadline hit."""
        exited_at: float | None = None
        while self.selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and self.process.poll() is not None:
                exited_at = now
            wait = deadline - now
            if exited_at is not None:
                if now - exited_at >= _EXIT_GRACE_S:
                    break
                wait = min(wait, _EXIT_GRACE_S)
            for key, _ in self.selector.select(timeout=min(wait, 0.1)):
                self._step(key)
        return False

    def _step(self, key: selectors.SelectorKey) -> None:
        if key.data == "stdin":
            try:
                sent = os.write(key.fd, self.pending[:_CHUNK])
            except BlockingIOError:
                sent = 0
            except BrokenPipeError:
                sent = len(self.pending)  # the program stopped reading: drop the rest
            self.pending = self.pending[sent:]
            if not self.pending:
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
            return
        chunk = os.read(key.fd, _CHUNK)
        if chunk:
            self.captures[key.data].feed(chunk)
        else:
            self.selector.unregister(key.fileobj)


def _run(request: dict[str, Any], stdin_data: bytes) -> dict[str, Any]:
    deadline = time.monotonic() + float(request["timeout_s"])
    started = time.monotonic()
    oom_before = _oom_kills()
    try:
        process = _spawn(request)
    except OSError as exc:
        return {"spawn_error": f"{type(exc).__name__}: {exc}", "duration_s": 0.0}
    pump = _Pump(process, stdin_data, int(request["output_limit"]))
    timed_out = pump.run(deadline)
    if not timed_out:
        # Output closed does not mean exited: give the program the rest of
        # its deadline to finish before the group is killed.
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    # Whatever is left of the process group (background children) goes now.
    _kill_group(process.pid)
    exit_code = process.wait()
    stdout, stderr = pump.captures["stdout"], pump.captures["stderr"]
    return {
        "exit_code": exit_code if exit_code >= 0 else None,
        "signal": -exit_code if exit_code < 0 else None,
        "timed_out": timed_out,
        "oom_kills": _oom_kills() - oom_before,
        "duration_s": time.monotonic() - started,
        "stdout_total": stdout.total,
        "stderr_total": stderr.total,
        "_stdout": bytes(stdout.kept),
        "_stderr": bytes(stderr.kept),
    }


def main() -> int:
    """Serve one request on stdin/stdout, then exit."""
    # The tool gets fresh pipes; the protocol stream stays with the runner.
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _write_frames(stdout, json.dumps({"ready": True}).encode())
    header = json.loads(_read_frame(stdin, _MAX_HEADER))
    stdin_data = _read_frame(stdin, int(header["stdin_limit"]))
    workspace_in = _read_frame(stdin, int(header["workspace_limit"]))
    workspace_root = header.get("cwd") or "/workspace"
    _extract_workspace(workspace_in, workspace_root)

    outcome = _run(header, stdin_data)
    stdout_data = outcome.pop("_stdout", b"")
    stderr_data = outcome.pop("_stderr", b"")
    workspace_out = b""
    if header.get("return_workspace"):
        workspace_out, error = _pack_workspace(workspace_root, int(header["workspace_limit"]))
        outcome["workspace_error"] = error
    _write_frames(stdout, json.dumps(outcome).encode(), stdout_data, stderr_data, workspace_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The byte stream between the host and the in-container runner (protocol 2).

The host attaches to the container's stdin, stdout and stderr through the
Docker engine (a hijacked HTTP connection). The engine wraps stdout and
stderr in its own multiplexing frames (8-byte header: stream, 3 zero bytes,
big-endian size); inside stdout the runner speaks length-prefixed frames
(4-byte big-endian size, then the payload). Stderr carries only live output
(display text, hostile), handed as it comes to the call's sink. Every size
the container sends is checked against a limit before anything is buffered.
The whole protocol, both sides, is specified in ``docs/runner-protocol.md``
and the runner's docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Iterable

__all__ = [
    "ENTRY_DIRECTORY",
    "ENTRY_FILE",
    "ENTRY_KEPT",
    "ENTRY_LIMIT",
    "ENTRY_REFUSED",
    "MODE_EXEC",
    "MODE_TOOL",
    "PROTOCOL_VERSION",
    "READY",
    "TOOL_ENTRY_ARGV",
    "AttachedStream",
    "FrameTooLargeError",
    "encode_request",
    "frame",
]

PROTOCOL_VERSION = "2"
"""Version of the runner protocol; the runner refuses any other."""
READY = b"stockade-ready"
"""The runner's first frame: it is up (with its tool host, if the image has one) and waits."""
EGRESS_SOCKET_ENV = "STOCKADE_EGRESS_SOCKET"
"""Set in a request's environment when the container has an egress socket."""
MODE_EXEC = "exec"
"""Request mode: run argv."""
MODE_TOOL = "tool"
"""Request mode: argv is ``TOOL_ENTRY_ARGV`` plus an entry point; a warm tool host may serve it."""
TOOL_ENTRY_ARGV = ("python3", "-S", "-m", "stockade_sdk.run")
"""The SDK's tool entry point, completed by ``MODULE:FUNCTION``: what a ``tool`` request runs."""

ENTRY_DIRECTORY = b"D"
"""Workspace entry ``D<path>``: a directory."""
ENTRY_FILE = b"F"
"""Workspace entry ``F<octal mode>\\0<path>``: a regular file; its content is the next frame."""
ENTRY_KEPT = b"K"
"""Workspace entry ``K<path>`` (runner to host): a file sent in, untouched; the host keeps it."""
ENTRY_LIMIT = 64 * 1024
"""Largest workspace entry frame (kind, fields and path; a file's content is its own frame)."""
ENTRY_REFUSED = b"R"
"""Workspace entry ``R<reason>\\0<path>`` (runner to host): something not sent back, and why."""

_DOCKER_HEADER = struct.Struct(">BxxxI")
_FRAME_LEN = struct.Struct(">I")
_STDOUT = 1
_STDERR = 2
# Largest read from the engine's stream at once; its frames are ~32 KiB.
_READ_CHUNK = 1 << 20
_SOCKET_BUFFER = 4 << 20


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix: one frame of the runner protocol."""
    return _FRAME_LEN.pack(len(payload)) + payload


class FrameTooLargeError(ValueError):
    """The container announced a frame larger than the caller allows."""


class AttachedStream:
    """Framed messages over a container's attached stdin/stdout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = bytearray()
        self._docker_left = 0  # payload bytes left in the engine's current frame
        self._docker_stream = _STDOUT
        self.on_stderr: Callable[[bytes], None] | None = None
        """Gets the container's stderr as it is read (live output); None: dropped."""

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> AttachedStream:
        """Wrap the raw socket of a hijacked attach connection."""
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            # Fewer event-loop turns per megabyte of workspace (the kernel
            # caps the size at net.core.[wr]mem_max). 100 MiB into a
            # container: 0.41-0.78 s with the default buffers, 0.27-0.52 s.
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def _fill(self, size: int) -> None:
        # Whatever the engine's stream already holds is taken in one piece
        # (up to _READ_CHUNK), not one readexactly per engine frame: 100 MiB
        # of stdout, p50 of 5 on the loaded 2-core VM, 0.40 s before, 0.36 s.
        while len(self._pending) < size:
            await self._read_some(size)

    async def _read_some(self, size: int) -> None:
        """One engine header, or what the engine's current frame has ready."""
        if not self._docker_left:
            self._docker_stream, self._docker_left = _DOCKER_HEADER.unpack(
                await self._reader.readexactly(_DOCKER_HEADER.size)
            )
            return
        chunk = await self._reader.read(min(self._docker_left, _READ_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(self._pending), size)
        self._docker_left -= len(chunk)
        if self._docker_stream == _STDOUT:
            self._pending += chunk
        elif self._docker_stream == _STDERR and self.on_stderr is not None:
            self.on_stderr(chunk)

    async def _take(self, size: int) -> bytes:
        await self._fill(size)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    async def read_frame(self, limit: int) -> bytes:
        """The next runner frame; :class:`FrameTooLargeError` if larger than ``limit``."""
        (size,) = _FRAME_LEN.unpack(await self._take(_FRAME_LEN.size))
        if size > limit:
            raise FrameTooLargeError(f"frame of {size} bytes announced, limit {limit}")
        return await self._take(size)

    async def drain(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Read on (stderr to its sink) until ``done()``, the stream ends or time is up.

        Stdout after the reply is kept for :meth:`read_frame`; the engine
        passes the two streams on independently, so the end of the live
        output may come after the report.
        """
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            async with asyncio.timeout(timeout_s):
                while not done():
                    await self._read_some(len(self._pending) + 1)

    async def write_frames(self, *payloads: bytes) -> None:
        """Send frames to the runner's stdin."""
        await self.write_framed(frame(payload) for payload in payloads)

    async def write_framed(self, frames: Iterable[bytes]) -> None:
        """Send frames that already carry their length prefix (see :func:`frame`)."""
        # One write per frame, not writelines: that joins everything into one
        # more copy first (100 MiB: 0.57-1.1 s with writelines, 0.41-0.78 s).
        for payload in frames:
            self._writer.write(payload)
        await self._writer.drain()

    def close(self) -> None:
        """Drop the connection (the container is destroyed separately)."""
        self._writer.close()


def encode_request(
    *,
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str,
    timeout_s: float,
    output_limit: int,
    stdin_limit: int,
    workspace_limit: int,
    return_workspace: bool,
    mode: str = MODE_EXEC,
) -> bytes:
    """The request header: NUL-separated fields (see the runner's docstring).

    The runner parses this without importing ``json``. No field can hold a
    NUL: :class:`ExecRequest` refuses them.
    """
    if mode not in (MODE_EXEC, MODE_TOOL):
        raise ValueError(f"unknown request mode {mode!r}")
    fields = [
        PROTOCOL_VERSION,
        repr(float(timeout_s)),
        str(output_limit),
        str(stdin_limit),
        str(workspace_limit),
        "1" if return_workspace else "0",
        cwd,
        mode,
        str(len(argv)),
        *argv,
        str(len(env)),
        *(f"{key}={value}" for key, value in env.items()),
    ]
    return "\0".join(fields).encode("utf-8", "surrogateescape")

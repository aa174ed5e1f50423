"""The byte stream between the host and the in-container runner.

The host attaches to the container's stdin and stdout through the Docker
engine (a hijacked HTTP connection). The engine wraps stdout in its own
multiplexing frames (8-byte header: stream, 3 zero bytes, big-endian size);
inside that stream the runner speaks length-prefixed frames (4-byte
big-endian size, then the payload). Every size the container sends is checked
against a limit before anything is buffered.
"""

from __future__ import annotations

import asyncio
import socket
import struct

__all__ = ["PROTOCOL_VERSION", "READY", "AttachedStream", "FrameTooLargeError", "encode_request"]

PROTOCOL_VERSION = "1"
"""Version of the runner protocol; the runner refuses any other."""
READY = b"stockade-ready"
"""The runner's first frame: it is up and waits for its request."""
EGRESS_SOCKET_ENV = "STOCKADE_EGRESS_SOCKET"
"""Set in a request's environment when the container has an egress socket."""

_DOCKER_HEADER = struct.Struct(">BxxxI")
_FRAME_LEN = struct.Struct(">I")
_STDOUT = 1


class FrameTooLargeError(ValueError):
    """The container announced a frame larger than the caller allows."""


class AttachedStream:
    """Framed messages over a container's attached stdin/stdout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = bytearray()

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> AttachedStream:
        """Wrap the raw socket of a hijacked attach connection."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def _fill(self, size: int) -> None:
        while len(self._pending) < size:
            stream, length = _DOCKER_HEADER.unpack(
                await self._reader.readexactly(_DOCKER_HEADER.size)
            )
            payload = await self._reader.readexactly(length)
            if stream == _STDOUT:
                self._pending += payload

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

    async def write_frames(self, *payloads: bytes) -> None:
        """Send frames to the runner's stdin."""
        for payload in payloads:
            self._writer.write(_FRAME_LEN.pack(len(payload)))
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
) -> bytes:
    """The request header: NUL-separated fields (see the runner's docstring).

    The runner parses this without importing ``json`` (start-up time is paid
    on every call). No field can hold a NUL: :class:`ExecRequest` refuses them.
    """
    fields = [
        PROTOCOL_VERSION,
        repr(float(timeout_s)),
        str(output_limit),
        str(stdin_limit),
        str(workspace_limit),
        "1" if return_workspace else "0",
        cwd,
        str(len(argv)),
        *argv,
        str(len(env)),
        *(f"{key}={value}" for key, value in env.items()),
    ]
    return "\0".join(fields).encode("utf-8", "surrogateescape")

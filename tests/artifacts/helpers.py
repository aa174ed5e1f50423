"""What the artifact tests share: a stdlib PNG writer (the same source runs in the sandbox)."""

from __future__ import annotations

import struct
import zlib

PNG_WRITER = """
import struct, zlib
def png(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\\0" + b"\\x10\\x80\\xf0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))
"""
"""Python source defining ``png(width, height)``: a real RGB PNG of one colour."""


def png(width: int, height: int) -> bytes:
    """The bytes ``PNG_WRITER``'s ``png`` makes, made here."""
    scope: dict[str, object] = {}
    exec(PNG_WRITER, scope)  # our own constant source, the one the sandbox runs
    made = scope["png"](width, height)  # type: ignore[operator]
    assert isinstance(made, bytes)
    return made


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, size = 8, None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        offset += 12 + length
    assert size is not None
    return size

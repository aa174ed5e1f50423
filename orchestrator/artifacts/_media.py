"""A file's media type, decided from its bytes alone (never from its name).

Whatever a sandbox wrote is hostile: a file called ``chart.png`` may hold
HTML and script. Only a short allow-list is recognised, each by a strict
check of its content; everything else is ``application/octet-stream``.

- raster images by their signature and first structure: PNG (signature and
  an ``IHDR`` chunk first), JPEG (SOI and a marker), GIF (87a/89a), WebP
  (a RIFF container of type ``WEBP`` with a VP8 chunk);
- PDF by its ``%PDF-`` header;
- SVG: UTF-8 text whose first element, after the XML prolog, is ``<svg``. It
  is recognised so it can be labelled for what it is: active content (it may
  carry script), served only as an attachment under a sandboxing policy and
  never shown to a model as an image;
- JSON: UTF-8 text that parses as one JSON value;
- CSV: UTF-8 text of at least two rows with the same number (two or more)
  of comma-separated fields (judged on its first MiB of whole lines);
- anything else that is UTF-8 text without control characters is
  ``text/plain`` (HTML included: it is only text here, and it is never served
  as anything that renders).
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Final

__all__ = [
    "IMAGE_TYPES",
    "OCTET_STREAM",
    "detect_media_type",
]

OCTET_STREAM: Final = "application/octet-stream"
"""Unknown bytes."""

PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
GIF: Final = "image/gif"
WEBP: Final = "image/webp"
PDF: Final = "application/pdf"
SVG: Final = "image/svg+xml"
JSON: Final = "application/json"
CSV: Final = "text/csv"
TEXT: Final = "text/plain"

IMAGE_TYPES: Final = frozenset({PNG, JPEG, GIF, WEBP})
"""Raster images a model may be shown (SVG is not one: it is active content)."""

# JSON is parsed whole only below this size (~30 ms a MiB here); above it, text stays text.
_PARSE_LIMIT = 8 << 20
# CSV is judged on its first rows: at most this much, cut at a line's end.
_CSV_SAMPLE = 1 << 20
# A control character other than tab, newline, form feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# The XML prolog an SVG may start with: declaration, comments, processing
# instructions, a doctype without an internal subset, whitespace.
_PROLOG = re.compile(
    r"\A(?:\s+|<\?xml[^>]*\?>|<!--.*?-->|<\?[^>]*\?>|<!DOCTYPE\s+svg[^>\[]*>)*",
    re.DOTALL | re.IGNORECASE,
)
_SVG_ROOT = re.compile(r"<svg[\s>/]")


def _png(data: bytes) -> bool:
    # Signature, then the first chunk: length 13, type IHDR.
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[8:16] == b"\x00\x00\x00\x0dIHDR"


def _jpeg(data: bytes) -> bool:
    # Start of image, then the first segment's marker.
    return len(data) >= 4 and data[:3] == b"\xff\xd8\xff" and data[3] not in (0x00, 0xFF)


def _gif(data: bytes) -> bool:
    return data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 13


def _webp(data: bytes) -> bool:
    return (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] in (b"VP8 ", b"VP8L", b"VP8X")
    )


def _pdf(data: bytes) -> bool:
    return data[:5] == b"%PDF-"


def _text(data: bytes) -> str | None:
    """The bytes as UTF-8 text without control characters (a BOM dropped), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff")
    return None if _CONTROL.search(text) else text


def _svg(text: str) -> bool:
    prolog = _PROLOG.match(text)
    start = prolog.end() if prolog else 0
    return _SVG_ROOT.match(text, start) is not None


def _json(text: str) -> bool:
    if len(text) > _PARSE_LIMIT or not text.strip():
        return False
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _csv(text: str) -> bool:
    if len(text) > _CSV_SAMPLE:
        text = text[: text.rfind("\n", 0, _CSV_SAMPLE) + 1]
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error:
        return False
    if len(rows) < 2:
        return False
    width = len(rows[0])
    return width >= 2 and all(len(row) == width for row in rows)


def detect_media_type(data: bytes) -> str:
    """The media type of ``data`` from its content; ``application/octet-stream`` if unknown.

    Text types carry no ``charset`` parameter here: every text type
    recognised is UTF-8 (the server says so when it serves one).
    """
    for check, media_type in ((_png, PNG), (_jpeg, JPEG), (_gif, GIF), (_webp, WEBP), (_pdf, PDF)):
        if check(data):
            return media_type
    text = _text(data)
    if text is None:
        return OCTET_STREAM
    if _svg(text):
        return SVG
    if _json(text):
        return JSON
    if _csv(text):
        return CSV
    return TEXT

"""The lines of a file a regular expression matches, read in bounded pieces.

A line is read at most :data:`SEGMENT_BYTES` at a time, so a workspace file
of one huge line (a minified bundle, a JSON dump, a log without newlines)
costs ``files.search`` no more memory than a short one: read whole, a 64 MB
line took four times its size (bytes, text, the stripped copy, the match)
and the sandbox's memory limit killed the tool.

A longer line is searched in windows, each overlapping the one before by
:data:`OVERLAP_BYTES` (a match across a boundary up to that long is found)
and carrying one character on each side that can be looked at but not
matched from, so ``^``, ``$`` and ``\\b`` see the line, not a window's edges.
A matching line longer than :data:`MAX_TEXT` characters is shown around its
first match, each side cut marked ``…``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["MAX_TEXT", "OVERLAP_BYTES", "SEGMENT_BYTES", "matching_lines"]

MAX_TEXT = 500
"""Characters of a matching line shown (markers aside)."""
SEGMENT_BYTES = 64 * 1024
"""Bytes of a line read and searched at once."""
OVERLAP_BYTES = 4 * 1024
"""Bytes of a window searched again with the next piece of the same line."""
CUT = "…"
"""Marks a side of a shown line that was cut."""
_BEFORE_MATCH = 100
"""Characters shown before the match in a line shown cut."""


def _char_start(data: bytes, index: int) -> int:
    """The first index at or after ``index`` where a UTF-8 character begins (not a
    continuation byte), so a window never starts inside a character."""
    while index < len(data) and data[index] & 0xC0 == 0x80:
        index += 1
    return index


def _first_char(data: bytes) -> bytes:
    """``data`` up to the end of its first whole character (continuation bytes that end
    the previous piece's character included)."""
    return data[: _char_start(data, _char_start(data, 0) + 1)]


def _shown(
    text: str, match: re.Match[str], *, start: int, cut_before: bool, cut_after: bool
) -> str:
    """The line as the model reads it: whole when it fits, else around the match, marked."""
    if not cut_before and not cut_after and len(text) <= MAX_TEXT:
        return text
    left = max(start, match.start() - _BEFORE_MATCH)
    right = min(len(text), left + MAX_TEXT)
    before = CUT if cut_before or left > start else ""
    after = CUT if cut_after or right < len(text) else ""
    return f"{before}{text[left:right]}{after}"


def _search(regex: re.Pattern[str], carried: bytes, body: bytes, following: bytes) -> str | None:
    """Search one window: ``carried`` (the end of the line already searched, its first
    character looked at only), ``body`` (new bytes of the line) and ``following`` (the next
    character of the line, looked at only; empty at the line's end)."""
    text = (carried + body + following).decode("utf-8", "replace")
    start = 1 if carried else 0  # the carried first character: a look-behind, not a start
    match = regex.search(text, start)
    if match is None:
        return None
    return _shown(text, match, start=start, cut_before=bool(carried), cut_after=bool(following))


def matching_lines(handle: BinaryIO, regex: re.Pattern[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text shown)`` of each line of ``handle`` that ``regex`` matches."""
    number = 0
    piece = handle.readline(SEGMENT_BYTES)
    while piece:
        number += 1
        shown: str | None = None
        carried = b""
        while True:
            ends = piece.endswith(b"\n")
            body = piece[:-1] if ends else piece
            following = b"" if ends else handle.readline(SEGMENT_BYTES)
            if following == b"\n":  # the line ended exactly at the piece's size
                ends, following = True, b""
            last = ends or not following
            if shown is None:
                shown = _search(regex, carried, body, b"" if last else _first_char(following))
                window = carried + body
                carried = window[_char_start(window, max(0, len(window) - OVERLAP_BYTES)) :]
            if last:
                break
            piece = following
        if shown is not None:
            yield number, shown
        piece = handle.readline(SEGMENT_BYTES)

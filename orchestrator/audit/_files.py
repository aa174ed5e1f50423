"""Where a log's records live: its current file and the files rotated out of it.

A log at ``audit.jsonl`` rotates by renaming the current file to
``audit.jsonl.<seq>`` — ``<seq>`` is the seq of the file's first record,
zero-padded to 12 digits — and starting a new ``audit.jsonl`` whose first
record chains to the last record of the file rotated out. Ordered by that
number, the rotated files and then the current file hold the whole chain.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from orchestrator.audit._chain import parse_line

__all__ = ["archive_path", "archives", "open_chain"]

_DIGITS = 12


def archive_path(path: Path, first_seq: int) -> Path:
    """The name the current file ``path`` gets when it is rotated out."""
    return path.with_name(f"{path.name}.{first_seq:0{_DIGITS}d}")


def _numbered(path: Path) -> list[tuple[int, Path]]:
    pattern = re.compile(re.escape(path.name) + rf"\.(\d{{{_DIGITS},}})")
    found: list[tuple[int, Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        matched = pattern.fullmatch(entry.name)
        if matched and entry.is_file():
            found.append((int(matched.group(1)), entry))
    return sorted(found)


def archives(path: Path) -> list[Path]:
    """The files rotated out of ``path``, oldest first."""
    return [entry for _, entry in _numbered(path)]


def _first_seq(handle: BinaryIO) -> int | None:
    line = handle.readline()
    handle.seek(0)
    try:
        seq = parse_line(line).get("seq") if line.endswith(b"\n") else None
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def open_chain(path: Path) -> tuple[list[Path], BinaryIO | None]:
    """The rotated files, oldest first, and the current file opened (None if there is none).

    Consistent while writers rotate the log: the current file is opened
    first, so it is the one the listing ends with even if it is rotated out
    meanwhile (then it is not listed twice), and files rotated after it are
    left out. The caller closes the handle.
    """
    try:
        current: BinaryIO | None = path.open("rb")
    except FileNotFoundError:
        current = None
    numbered = _numbered(path)
    if current is None:
        return [entry for _, entry in numbered], None
    held = os.fstat(current.fileno())
    first = _first_seq(current)
    rotated = []
    for number, entry in numbered:
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        if (stat.st_dev, stat.st_ino) == (held.st_dev, held.st_ino):
            continue  # the current file, rotated out since we opened it
        if first is not None and number >= first:
            continue  # rotated out after the current file was opened: newer than it
        rotated.append(entry)
    return rotated, current

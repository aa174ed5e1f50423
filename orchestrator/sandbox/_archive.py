"""Reading the workspace a sandbox sends back, which is hostile by definition.

The runner returns a workspace as a stream of entries (``_wire``): directories,
files with their content, files it says it left untouched, and entries it
refused itself. Only regular files and directories are accepted; a path that
is absolute, climbs out with ``..``, holds a NUL, has a name past 255 bytes or
is longer than 3 072 bytes (the host could not write it), repeats an earlier
entry, sits under a file, or is a file named like the directory of entries
before it (the runner sends parents first; a hostile one need not) is refused
and reported, and so is any other kind of entry. An "untouched" claim can only
keep the host's own copy of a file the host sent in: it brings no byte from
the sandbox. Sizes and counts are capped as entries arrive, before any byte
reaches the host's disk; nothing is written here
(:mod:`orchestrator.sandbox.workspace` writes, under its own rules).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

from orchestrator.sandbox._wire import (
    ENTRY_DIRECTORY,
    ENTRY_FILE,
    ENTRY_KEPT,
    ENTRY_LIMIT,
    ENTRY_REFUSED,
    FrameTooLargeError,
)

__all__ = ["KEPT", "ArchiveLimitError", "FrameSource", "SafeWorkspace", "WorkspaceReader"]

_MAX_REASON = 200
_MAX_NAME = 255
_MAX_PATH = 3072


class ArchiveLimitError(ValueError):
    """The workspace cannot travel: it is larger or holds more entries than allowed (or
    its previous call's changes are not all written yet, and cannot be)."""


class FrameSource(Protocol):
    """Where the entries come from (the runner's stream)."""

    async def read_frame(self, limit: int) -> bytes:
        """The next frame; :class:`FrameTooLargeError` if larger than ``limit``."""
        ...


class _Kept(enum.Enum):
    KEPT = "kept"


KEPT = _Kept.KEPT
"""An entry's value when the host keeps its own copy of the file."""


@dataclass(kw_only=True)
class SafeWorkspace:
    """The accepted content: relative paths to file bytes, :data:`KEPT`, or None for a directory."""

    entries: dict[PurePosixPath, bytes | _Kept | None] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    """Each refused entry with the reason, e.g. ``"link: symbolic link to '/etc/passwd'"``."""
    executable: set[PurePosixPath] = field(default_factory=set)
    """Files returned with the owner's execute bit."""


def _safe_path(name: str) -> PurePosixPath | str:
    """The normalised relative path, or the reason it is refused."""
    if "\x00" in name:
        return "NUL byte in path"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "absolute path"
    parts = [part for part in path.parts if part not in ("", ".")]
    if any(part == ".." for part in parts):
        return "path climbs out of the workspace"
    if not parts:
        return "empty path"
    return _too_long(parts) or PurePosixPath(*parts)


def _too_long(parts: list[str]) -> str | None:
    """Why the host could not write this path into its tree, if it could not.

    NAME_MAX of its filesystems; PATH_MAX less room for the workspace's own directory.
    """
    sizes = [len(part.encode("utf-8", "surrogateescape")) for part in parts]
    if max(sizes) > _MAX_NAME:
        return f"a name longer than {_MAX_NAME} bytes"
    if sum(sizes) + len(sizes) - 1 > _MAX_PATH:
        return f"path longer than {_MAX_PATH} bytes"
    return None


def _one_line(text: str) -> str:
    """``text`` with its control characters escaped: each refusal is one line wherever it is
    shown (a model reads them among the platform's own lines)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class WorkspaceReader:
    """Validates returned entries as they arrive; :meth:`result` is what may be kept."""

    def __init__(
        self, *, sent: Mapping[PurePosixPath, int], max_bytes: int, max_files: int
    ) -> None:
        """``sent``: the files the host sent in, with their sizes (what ``K`` may keep)."""
        self._sent = sent
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._total = 0
        self._safe = SafeWorkspace()
        self._parents: set[PurePosixPath] = set()
        """Every directory an accepted entry sits in: no file may take one of these names."""

    @property
    def room(self) -> int:
        """Bytes the next file's content may have within the quota."""
        return self._max_bytes - self._total

    @staticmethod
    def wants_content(header: bytes) -> bool:
        """Whether the entry is followed by a frame with the file's content."""
        return header[:1] == ENTRY_FILE

    def _refuse(self, name: str, reason: str) -> None:
        if len(self._safe.rejected) >= self._max_files:
            raise ArchiveLimitError(f"more than {self._max_files} refused entries")
        # Both cut: a hostile stream may name thousands of entries 64 KiB long.
        if len(name) > _MAX_REASON:
            name = f"{name[:_MAX_REASON]}… ({len(name)} characters)"
        self._safe.rejected.append(f"{_one_line(name)}: {_one_line(reason[:_MAX_REASON])}")

    def add(self, header: bytes, content: bytes | None = None) -> None:
        """One entry (``content``: the frame after an ``F`` entry).

        Raises :class:`ArchiveLimitError` when the workspace as a whole breaks
        the byte or entry limits (nothing of it should then be kept); refuses
        single bad entries into :attr:`SafeWorkspace.rejected`.
        """
        kind, body = header[:1], header[1:]
        # F and R carry a field before the path; the path is last, after a NUL.
        fields, raw_path = b"", body
        if kind in (ENTRY_FILE, ENTRY_REFUSED):
            fields, _, raw_path = body.rpartition(b"\0")
        name = _text(raw_path)
        if kind == ENTRY_REFUSED:
            self._refuse(name, _text(fields) or "refused by the sandbox")
            return
        path = _safe_path(name)
        if isinstance(path, str):
            self._refuse(repr(name), path)
            return
        entries = self._safe.entries
        if kind not in (ENTRY_DIRECTORY, ENTRY_FILE, ENTRY_KEPT):
            self._refuse(str(path), f"unknown entry kind {kind!r}")
        elif path in entries:
            self._refuse(str(path), "duplicate entry")
        elif any(entries.get(parent) is not None for parent in path.parents):
            self._refuse(str(path), "a parent is a file")
        elif kind != ENTRY_DIRECTORY and path in self._parents:
            self._refuse(str(path), "a file where earlier entries have their directory")
        elif kind == ENTRY_KEPT and path not in self._sent:
            self._refuse(str(path), "kept, but never sent in")
        else:
            self._accept(kind, fields, path, content)

    def _accept(self, kind: bytes, mode: bytes, path: PurePosixPath, content: bytes | None) -> None:
        if len(self._safe.entries) >= self._max_files:
            raise ArchiveLimitError(f"more than {self._max_files} files and directories")
        self._parents.update(path.parents)
        if kind == ENTRY_DIRECTORY:
            self._safe.entries[path] = None
            return
        size = self._sent[path] if kind == ENTRY_KEPT else len(content or b"")
        self._total += size
        if self._total > self._max_bytes:
            raise ArchiveLimitError(
                f"files add up to more than the quota of {self._max_bytes} bytes"
            )
        if kind == ENTRY_KEPT:
            self._safe.entries[path] = KEPT
            return
        self._safe.entries[path] = content or b""
        if mode.isdigit() and int(mode, 8) & 0o100:
            self._safe.executable.add(path)

    def result(self) -> SafeWorkspace:
        """What was accepted so far."""
        return self._safe

    async def read(self, source: FrameSource) -> SafeWorkspace:
        """Every entry from ``source`` up to the end frame; what may be kept.

        Raises :class:`ArchiveLimitError` as soon as the limits break (a
        file's content announced larger than the quota's room included).
        """
        while header := await source.read_frame(ENTRY_LIMIT):
            content = None
            if self.wants_content(header):
                try:
                    content = await source.read_frame(self.room)
                except FrameTooLargeError as exc:
                    raise ArchiveLimitError(
                        f"files add up to more than the quota of {self._max_bytes} bytes"
                    ) from exc
            self.add(header, content)
        return self._safe

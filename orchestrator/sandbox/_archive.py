"""Reading archives that come out of a sandbox, which are hostile by definition.

Only regular files and directories are accepted; links, devices, FIFOs and
anything with a path that is absolute, climbs out with ``..`` or repeats an
earlier entry are refused and reported. Sizes and counts are capped before any
byte reaches the host's disk. The archive is never extracted by ``tarfile``
itself: entries are read into memory (already bounded by the caller) and
written by :mod:`orchestrator.sandbox.workspace` under its own rules.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

__all__ = ["ArchiveLimitError", "SafeArchive", "read_hostile_tar"]


class ArchiveLimitError(ValueError):
    """The archive is larger or holds more entries than allowed."""


@dataclass(kw_only=True)
class SafeArchive:
    """The accepted content of an archive: relative paths to file bytes (None for a directory)."""

    entries: dict[PurePosixPath, bytes | None] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    """Each refused entry with the reason, e.g. ``'link -> /etc/passwd: symbolic link'``."""
    executable: set[PurePosixPath] = field(default_factory=set)


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
    return PurePosixPath(*parts)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    return "unsupported entry type"


def read_hostile_tar(data: bytes, *, max_bytes: int, max_files: int) -> SafeArchive:
    """Validate an uncompressed tar archive and return what may be kept.

    Raises :class:`ArchiveLimitError` when the archive as a whole breaks the
    byte or entry limits (nothing of it should then be kept); refuses single
    bad entries into :attr:`SafeArchive.rejected` and keeps the rest.
    """
    if len(data) > max_bytes + 64 * 1024:  # tar headers add a little
        raise ArchiveLimitError(f"archive of {len(data)} bytes exceeds the quota of {max_bytes}")
    result = SafeArchive()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            _collect(archive, result, max_bytes=max_bytes, max_files=max_files)
    except tarfile.TarError as exc:
        raise ArchiveLimitError(f"not a valid tar archive: {exc}") from exc
    return result


def _collect(
    archive: tarfile.TarFile, result: SafeArchive, *, max_bytes: int, max_files: int
) -> None:
    total = 0
    for count, member in enumerate(archive, start=1):
        if count > max_files:
            raise ArchiveLimitError(f"more than {max_files} files and directories")
        path = _safe_path(member.name)
        if isinstance(path, str):
            result.rejected.append(f"{member.name!r}: {path}")
            continue
        if path in result.entries:
            result.rejected.append(f"{path}: duplicate entry")
            continue
        if not (member.isreg() or member.isdir()):
            result.rejected.append(f"{path}: {_kind(member)}")
            continue
        if any(result.entries.get(parent, None) is not None for parent in path.parents):
            result.rejected.append(f"{path}: a parent is a file")
            continue
        if member.isdir():
            result.entries[path] = None
            continue
        total += member.size
        if total > max_bytes:
            raise ArchiveLimitError(f"files add up to more than the quota of {max_bytes} bytes")
        source = archive.extractfile(member)
        content = source.read() if source is not None else b""
        if len(content) != member.size:
            result.rejected.append(f"{path}: truncated entry")
            continue
        result.entries[path] = content
        if member.mode & 0o100:
            result.executable.add(path)

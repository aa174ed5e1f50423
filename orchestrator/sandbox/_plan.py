"""What a call's returned workspace asks of the host's copy: the steps, and what to leave.

:func:`plan` compares the tree that went into the sandbox (``Outgoing``) with
the one that came back (``SafeWorkspace``, already checked as hostile) and
gives the :mod:`~orchestrator.sandbox._journal` steps that make the host's copy
the returned one, in path order. It leaves out a step whose place the host
changed since the call started (a ``--workspace`` directory is the user's:
they may edit, add or remove files meanwhile) and every step below it, and
names those places: the host's version is kept there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from orchestrator.sandbox._archive import SafeWorkspace
from orchestrator.sandbox._journal import Kind, MakeDirectory, Place, Remove, Step

if TYPE_CHECKING:
    from orchestrator.sandbox.workspace import Outgoing

__all__ = ["MOVED", "Stamp", "plan", "stamp", "under"]

MOVED = "changed on the host while the call ran; the host's version is kept"
"""Why a path the call changed was left as the host has it."""


def plan(
    returned: SafeWorkspace, sent: Outgoing, changed: set[PurePosixPath]
) -> tuple[list[Step], list[PurePosixPath]]:
    """The steps to write (``changed``: the paths the call changed), and the places the
    host changed meanwhile, whose steps are left out."""
    return _unmoved(_steps(returned, sent, changed), sent)


class Stamp(NamedTuple):
    """A file as it was sent: what tells it changed (inode, size, modification and change
    times; a change of owner or mode changes the last), and its owner and permission bits,
    which a rewrite keeps."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    uid: int
    gid: int
    mode: int


def stamp(info: os.stat_result) -> Stamp:
    """The :class:`Stamp` of a file's ``lstat``."""
    return Stamp(
        info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_uid, info.st_gid,
        stat.S_IMODE(info.st_mode),
    )  # fmt: skip


def under(path: PurePosixPath, places: Iterable[PurePosixPath]) -> bool:
    """Whether ``path`` is one of ``places`` or below one."""
    return any(place == path or place in path.parents for place in places)


def _steps(returned: SafeWorkspace, sent: Outgoing, changed: set[PurePosixPath]) -> list[Step]:
    """The steps that turn the tree ``sent`` into the ``returned`` one, in path order
    (parents first; at one path, what goes before what comes).

    An entry that never travelled (``sent.stayed``) stays unless the call put
    something at its path (or below it: a "directory" there) or removed its
    directory.
    """
    directories = {path for path, value in returned.entries.items() if value is None}
    for path in returned.entries:
        directories.update(path.parents[:-1])  # a parent the sandbox did not list
    old: list[tuple[PurePosixPath, Kind]] = [(path, "directory") for path in sent.directories]
    old += [(path, "file") for path in sent.files]
    old += [(path, "other") for path in sent.stayed]
    steps: list[tuple[PurePosixPath, int, Step]] = []
    removed: set[PurePosixPath] = set()
    for path, kind in sorted(old):
        if removed.intersection(path.parents):
            continue  # goes with its directory
        if kind == "directory":
            goes = path not in directories
            if goes:
                removed.add(path)
        elif kind == "file":
            goes = path not in returned.entries or path in directories
        else:
            goes = path in returned.entries or path in directories
        if goes:
            steps.append((path, 0, Remove(path, kind)))
    steps += [(path, 1, MakeDirectory(path)) for path in directories - sent.directories]
    for path, value in returned.entries.items():
        if isinstance(value, bytes) and path in changed:
            before, owner = None, None
            if (was := sent.files.get(path)) is not None:  # a rewrite keeps mode and owner
                before, owner = was.mode, (was.uid, was.gid)
            mode = _mode(before, path in returned.executable)
            steps.append((path, 2, Place(path, value, mode, owner)))
    return [step for _path, _order, step in sorted(steps, key=lambda each: each[:2])]


def _unmoved(steps: list[Step], sent: Outgoing) -> tuple[list[Step], list[PurePosixPath]]:
    """The steps whose place the host left as the call found it; the paths of the others
    (a ``--workspace`` directory is the user's: they may edit, add or remove files while a
    call runs, and the call never knew). A step below a dropped one is dropped with it."""
    kept: list[Step] = []
    moved: list[PurePosixPath] = []
    for step in steps:
        path = step.path
        if under(path, moved):
            continue
        if _as_sent(sent, path, step):
            kept.append(step)
        else:
            moved.append(path)
    return kept, moved


def _as_sent(sent: Outgoing, path: PurePosixPath, step: Step) -> bool:
    """Whether the host's entry at ``path`` is still what the call found there (nothing, for
    a path the call adds; for a directory it removes, every entry in it)."""
    host = sent.root.joinpath(*path.parts)
    try:
        info = os.stat(host, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):  # or under a file an earlier step removes
        return path not in sent.files or isinstance(step, Remove)
    if path in sent.files:
        return stamp(info) == sent.files[path]
    if path in sent.directories:
        return not isinstance(step, Remove) or _tree_as_sent(sent, set(sent.stayed), host, path)
    if path in sent.stayed:
        return not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))
    # Not there when the call started: the host's now, unless it is a directory the
    # call makes too.
    return isinstance(step, MakeDirectory) and stat.S_ISDIR(info.st_mode)


def _tree_as_sent(
    sent: Outgoing, stayed: set[PurePosixPath], host: Path, path: PurePosixPath
) -> bool:
    """Whether the directory ``host`` holds only what the call found in it (``stayed``:
    ``sent.stayed``, as a set)."""
    with os.scandir(host) as scan:
        for entry in scan:
            below = path / entry.name
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if below not in sent.directories:
                    return False
                if not _tree_as_sent(sent, stayed, Path(entry.path), below):
                    return False
            elif stat.S_ISREG(info.st_mode):
                if sent.files.get(below) != stamp(info):
                    return False
            elif below not in stayed:
                return False
    return True


def _mode(before: int | None, executable: bool) -> int:
    """The mode of a file the call wrote: private when new; when it rewrote a file of the
    host's, that file's read and write bits (never set-id or sticky: the bytes are the
    sandbox's), executable as the sandbox left it."""
    if before is None:
        return 0o700 if executable else 0o600
    kept = before & 0o666
    return kept | (before & 0o111 or 0o100) if executable else kept

"""A call's changes written into a workspace in place, crash-consistently (a redo journal).

Why in place: a workspace keeps its identity. A directory given with
``--workspace`` is the user's: a shell's current directory, the files an
editor has open, its owner and attributes, what the user adds while a call
runs. Swapping a new tree in (what one atomic rename of the whole workspace
needs) would leave all of them on a deleted copy. Here only the paths the
call changed are touched.

How it stays crash-consistent: the new files are written beside the
workspace into a staging directory (``.<run>.new-XXXXXXXX``), each
``fsync``-ed, with the journal of every step; renaming the staging directory
to ``.<run>.apply`` commits the call. Then the steps run (remove an entry,
make a directory, rename a staged file into place), each one a no-op when it
has already been done, and ``.<run>.apply`` is removed once their
directories are ``fsync``-ed. A process killed before the commit leaves a
staging directory, which the next opening removes (the workspace is as it
was); killed after it, a journal that the next process to use the workspace
finishes (:func:`finish`): the workspace then holds the whole new content.
Only the process holding the workspace's lock writes either.

Every step walks down from the workspace without following a symbolic link:
the user's links stay where the call did not take their place, and are
never a way out of the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

__all__ = [
    "IN_THE_WAY",
    "Kind",
    "MakeDirectory",
    "Place",
    "Remove",
    "Step",
    "commit",
    "finish",
    "staging_names",
]

Kind = Literal["file", "directory", "other"]
"""What a removal removes: a regular file, a directory (with what is in it), anything else
(a link, a FIFO: entries of the user's that never travel)."""

_JOURNAL = "journal.json"
# A step failing so is left undone (with those below it) rather than leaving a journal that
# can never finish: the host's entry is in the way (put there after the call's plan), or the
# host may not write there (a read-only directory or mount of the user's).
_IN_THE_WAY = frozenset({errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENOTEMPTY})
_NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
IN_THE_WAY = "the host put something else there while the call ran; the host's version is kept"
"""Why :func:`finish` left a step undone that the host's entry was in the way of."""
_log = logging.getLogger(__name__)
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Remove:
    """Remove the entry at ``path`` if it is still of ``kind`` (else it was done already)."""

    path: PurePosixPath
    kind: Kind


@dataclass(frozen=True)
class MakeDirectory:
    """Make the directory ``path`` (the umask applies, as to any new directory)."""

    path: PurePosixPath


@dataclass(frozen=True)
class Place:
    """Put a file with ``content`` and permission bits ``mode`` at ``path``, replacing any
    file there."""

    path: PurePosixPath
    content: bytes
    mode: int
    owner: tuple[int, int] | None = None
    """The user and group the file keeps (those of the file it replaces), where this
    process may give them; None: this process's."""


Step = Remove | MakeDirectory | Place


def staging_names(workspace: Path) -> tuple[str, str]:
    """The names of a workspace's staging directory (a prefix) and of its committed
    journal, both beside it."""
    return f".{workspace.name}.new-", f".{workspace.name}.apply"


def commit(workspace: Path, steps: Iterable[Step]) -> None:
    """Stage the new files and the journal of ``steps`` (in order) beside ``workspace``,
    and commit them: from here on the steps will be done, now or by :func:`finish`."""
    prefix, committed = staging_names(workspace)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=workspace.parent))
    try:
        journal: list[list[str]] = []
        for step in steps:
            match step:
                case Remove(path=path, kind=kind):
                    journal.append(["remove", str(path), kind])
                case MakeDirectory(path=path):
                    journal.append(["mkdir", str(path)])
                case Place(path=path, content=content, mode=mode, owner=owner):
                    name = str(len(journal))
                    _write(staging / name, content, mode, owner)
                    journal.append(["place", str(path), name])
        _write(staging / _JOURNAL, json.dumps(journal).encode(), 0o600)
        _fsync_directory(staging)
        staging.rename(workspace.with_name(committed))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(workspace.parent)


def finish(workspace: Path) -> tuple[tuple[PurePosixPath, str], ...] | None:
    """Do what the committed journal beside ``workspace`` says, if there is one, then
    remove it; None if there was none. Safe to call again after any failure or kill.

    Returns the steps not done, each path with why: the host had put something else in
    its way since the call began (a file where the call makes a directory, a directory
    where it puts a file: that is the host's, and stays), or the host may not write there.
    """
    journal = workspace.with_name(staging_names(workspace)[1])
    try:
        steps = json.loads((journal / _JOURNAL).read_bytes())
    except FileNotFoundError:
        if not os.path.lexists(journal):
            return None
        steps = []  # killed while removing a finished journal: its steps were done
    if steps and not workspace.is_dir():
        steps = []  # the workspace is gone (removed with its run): nothing to finish
    skipped = _run(workspace, journal, steps) if steps else ()
    shutil.rmtree(journal)
    _fsync_directory(workspace.parent)
    return skipped


def _run(
    workspace: Path, journal: Path, steps: list[list[str]]
) -> tuple[tuple[PurePosixPath, str], ...]:
    touched: set[PurePosixPath] = set()
    skipped: list[tuple[PurePosixPath, str]] = []
    staged = os.open(journal, _DIRECTORY_FLAGS)
    try:
        with _Tree(workspace) as tree:
            for action, name, detail in (_parse(step) for step in steps):
                path = PurePosixPath(name)
                if any(place in path.parents for place, _why in skipped):
                    continue
                try:
                    parent = tree.directory(path.parent)
                    if action == "remove":
                        _remove(parent, path.name, detail)
                    elif action == "mkdir":
                        _make_directory(parent, path.name)
                    else:
                        _place(staged, detail, parent, path.name)
                except OSError as exc:
                    if exc.errno in _IN_THE_WAY:
                        why = IN_THE_WAY
                    elif exc.errno in _NOT_ALLOWED:
                        why = f"the host may not write there ({exc.strerror})"
                    else:
                        raise
                    _log.warning("workspace %s: %s left as the host has it: %s",
                                 workspace, path, why)  # fmt: skip
                    skipped.append((path, why))
                    continue
                touched.add(path.parent)
            for directory in sorted(touched):
                os.fsync(tree.directory(directory))
    finally:
        os.close(staged)
    return tuple(skipped)


def _parse(step: list[str]) -> tuple[str, str, str]:
    """One journal entry, checked: the journal is the host's own, but a path that could
    leave the workspace is never acted on."""
    action, name, *rest = step
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name in ("", "."):
        raise ValueError(f"workspace journal: a step outside the workspace: {name!r}")
    return action, name, rest[0] if rest else ""


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _remove(parent: int, name: str, kind: str) -> None:
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if _kind(info.st_mode) != kind:
        return  # what is there now is the call's (a directory or file that took its place)
    if kind == "directory":
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _make_directory(parent: int, name: str) -> None:
    try:
        os.mkdir(name, 0o777, dir_fd=parent)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise


def _place(staged: int, staged_name: str, parent: int, name: str) -> None:
    try:
        os.rename(staged_name, name, src_dir_fd=staged, dst_dir_fd=parent)
    except FileNotFoundError:
        try:
            os.stat(staged_name, dir_fd=staged, follow_symlinks=False)
        except FileNotFoundError:
            return  # placed before a kill
        raise
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_in(staged, staged_name, parent, name)


def _copy_in(staged: int, staged_name: str, parent: int, name: str) -> None:
    """:func:`_place` into a directory on another filesystem (a mount point in the
    workspace, or the workspace itself): copied beside the target, ``fsync``-ed, renamed
    over it, and only then the staged file removed, so a kill anywhere leaves it to do
    again. The copy's name is new (never a name the call or the user may have there);
    a kill during the copy leaves it behind, named ``.<name>.stockade-XXXXXXXX``."""
    temporary = f".{name[:200]}.stockade-{secrets.token_hex(4)}"
    source = os.open(staged_name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=staged)
    try:
        info = os.fstat(source)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target = os.open(temporary, flags, 0o600, dir_fd=parent)
        try:
            while os.sendfile(target, source, None, 1 << 20):
                pass
            with contextlib.suppress(PermissionError):
                os.fchown(target, info.st_uid, info.st_gid)
            os.fchmod(target, stat.S_IMODE(info.st_mode))
            os.fsync(target)
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)
    os.unlink(staged_name, dir_fd=staged)


def _write(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]
        if owner is not None:
            with contextlib.suppress(PermissionError):  # only root gives a file away
                os.fchown(descriptor, *owner)
        os.fchmod(descriptor, mode)  # after: a change of owner drops set-id bits
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, _DIRECTORY_FLAGS)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _Tree:
    """Descriptors of a workspace's directories, each opened down from its root without
    following a link; the last one opened is kept (steps come sorted by path)."""

    def __init__(self, root: Path) -> None:
        self._root = os.open(root, _DIRECTORY_FLAGS)
        self._last: tuple[PurePosixPath, int] | None = None

    def __enter__(self) -> _Tree:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._drop()
        os.close(self._root)

    def directory(self, path: PurePosixPath) -> int:
        """A descriptor of the directory ``path`` (relative; ``.`` is the root)."""
        if path == PurePosixPath("."):
            return self._root
        if self._last is not None and self._last[0] == path:
            return self._last[1]
        self._drop()
        descriptor = os.dup(self._root)
        try:
            for part in path.parts:
                below = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
                os.close(descriptor)
                descriptor = below
        except BaseException:
            os.close(descriptor)
            raise
        self._last = (path, descriptor)
        return descriptor

    def _drop(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

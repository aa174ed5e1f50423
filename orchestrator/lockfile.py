"""Exclusive locks on files, taken in turns by the processes sharing a state directory.

``flock`` locks belong to an open file description: a process that dies drops
its locks with its descriptors, and two descriptors of one file exclude each
other even within one process. Lock files are made private (0600), and never
opened through a symbolic link.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["held", "open_lock", "release_lock_file", "try_lock", "try_lock_file"]


def open_lock(path: Path) -> int:
    """A descriptor of the lock file at ``path`` (created if missing); close it to unlock."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, 0o600)


def try_lock(descriptor: int) -> bool:
    """Take the exclusive lock of ``descriptor``'s file if nobody holds it; never waits."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """The lock file at ``path``, held until the block ends. Waits for it: call it from a
    thread, never on an event loop."""
    descriptor = open_lock(path)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def try_lock_file(path: Path) -> int | None:
    """The lock file at ``path`` taken, as a descriptor; None while another holds it. Never
    waits.

    For lock files that exist only while held (:func:`release_lock_file` removes them):
    a lock won on a file removed meanwhile (its holder released it) excludes nobody,
    so the file now at ``path`` is tried instead.
    """
    while True:
        descriptor = open_lock(path)
        if not try_lock(descriptor):
            os.close(descriptor)
            return None
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)


def release_lock_file(descriptor: int, path: Path) -> None:
    """Release a lock taken with :func:`try_lock_file`, removing its file (no lock file is
    left beside what it guards; the next taker makes a new one)."""
    try:
        # A file that cannot be removed only stays behind: the next taker locks it.
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        os.close(descriptor)

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

__all__ = ["held", "open_lock", "try_lock"]


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

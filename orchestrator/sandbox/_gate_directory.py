"""Where a process's egress gates live, and the sweep of those a killed process left.

Each :class:`~orchestrator.sandbox._egress_gate.EgressGates` keeps its gates
(one directory per container, with the proxy's socket and maybe the CA) in a
directory of its own, ``<root>/stockade-egress-XXXXXXXX``, made with
``mkdtemp`` (so a local user cannot plant it) and holding ``owner.lock``, on
which the owner keeps an exclusive ``flock`` for as long as it lives. A
process killed with SIGKILL (an orchestrator, a Ray node's sandbox host)
cannot remove its directory, but the kernel drops its lock: the next gates
opened under the same root take each such lock they can get and remove what
it guarded. A lock that cannot be taken belongs to a live process, in this
PID namespace or another, and its directory is left alone; so is anything
not owned by this user, not a plain directory, or without ``owner.lock``
(directories of older versions).

The lock file is locked under a temporary name and then renamed into place,
so no sweeper ever finds an ``owner.lock`` that is not yet locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

__all__ = ["GateDirectory"]

_log = logging.getLogger(__name__)

PREFIX = "stockade-egress-"
LOCK_NAME = "owner.lock"


SOCKET_PATH_MAX = 107
"""Bytes of a Unix socket's path (``sun_path`` is 108 with the final NUL)."""
_RANDOM_NAME = 8
"""Characters ``mkdtemp`` adds to a prefix."""


class GateDirectory:
    """One owner's directory of gates, made (and the root swept) on first use."""

    def __init__(self, root: Path | None = None, *, socket_name: str) -> None:
        """``root``: where to make it (default: the system's temporary directory);
        ``socket_name``: the socket each gate's directory holds, whose whole path must fit
        in what a Unix socket's path may hold."""
        self._root = root
        # Below the directory: "/<gate's random name>/<socket>".
        self._below = 1 + _RANDOM_NAME + 1 + len(os.fsencode(socket_name))
        self._path: Path | None = None
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()

    def path(self) -> Path:
        """The directory, made (after a sweep of the root) the first time it is asked for.

        Raises :class:`OSError` (``ENAMETOOLONG``) when the root is too long for the
        sockets below it, naming it and what to do.
        """
        with self._mutex:
            if self._path is None:
                root = self._root or Path(tempfile.gettempdir())
                longest = len(os.fsencode(root)) + 1 + len(PREFIX) + _RANDOM_NAME + self._below
                if longest > SOCKET_PATH_MAX:
                    raise OSError(
                        errno.ENAMETOOLONG,
                        f"egress sockets under {root} would have paths of {longest} bytes, "
                        f"over the {SOCKET_PATH_MAX} a Unix socket allows: point TMPDIR at "
                        "a shorter directory",
                    )
                sweep(root)
                self._path, self._lock_fd = _make(root)
            return self._path

    def gate(self) -> Path:
        """A new directory for one gate, in :meth:`path` (a short name: the socket's
        whole path must fit)."""
        return Path(tempfile.mkdtemp(prefix="", dir=self.path()))

    def remove(self) -> None:
        """Remove the directory and everything in it, and let go of its lock."""
        with self._mutex:
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _make(root: Path) -> tuple[Path, int]:
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    try:
        # Traversable by the sandbox user: its gate's socket lives below.
        path.chmod(0o755)
        fd, pending = tempfile.mkstemp(prefix=".lock-", dir=path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, path / LOCK_NAME)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path, fd


def sweep(root: Path) -> list[Path]:
    """Remove the gate directories under ``root`` whose owner is gone; the ones removed."""
    removed: list[Path] = []
    try:
        candidates = [entry for entry in root.iterdir() if entry.name.startswith(PREFIX)]
    except OSError as exc:
        _log.warning("egress: cannot list %s for stale gates: %s", root, exc)
        return removed
    uid = os.getuid()
    for entry in candidates:
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            continue
        try:
            fd = os.open(entry / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file (being made, or not ours to judge)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its owner lives
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    if removed:
        _log.info("egress: removed %d gate directories of stopped processes", len(removed))
    return removed

"""Files of the state directory that only the orchestrator's user may read.

The databases hold what calls carried (approval requests with their arguments,
runs' checkpoints, the agent's memories, who was limited when): on a shared
host nobody else should read them, whatever the umask. SQLite creates its
``-wal`` and ``-shm`` files with the database's own mode, so creating the
database private is enough.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["private_file"]


def private_file(path: Path) -> None:
    """Make ``path`` exist, readable and writable by its owner alone (0600).

    Missing parent directories are created 0700; an existing file open to
    others is closed to them. Never through a symbolic link.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, 0o600)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)

"""An orchestrator's id on the Ray cluster's hosts that survives a restart (issue 14, point 3).

The hosts label every container with the id of the orchestrator that asked for
it. An orchestrator killed (even SIGKILLed) and started again in the same state
directory should find its earlier life's containers and remove them at once,
not after its lease expires: so the id is kept in the state directory.

Several orchestrators may share one state directory at once (``stockade
serve`` and a ``stockade tools call`` beside it) and must not take each
other's containers for leftovers. Ids therefore live in numbered slot files,
each held with an exclusive ``flock`` for as long as its orchestrator runs: a
starting orchestrator takes the first slot nobody holds. The kernel drops the
lock of a killed process, so the restarted one takes that slot, and its id, again.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.lockfile import open_lock, try_lock

__all__ = ["InstanceClaim", "claim_instance_id"]

_SLOTS = 64
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, kw_only=True)
class InstanceClaim:
    """An id held by this process until :meth:`release` (or its death)."""

    instance_id: str
    fd: int | None
    """The locked slot file (None: every slot was taken, the id is a new one)."""

    def release(self) -> None:
        """Let the next orchestrator in the state directory take this id."""
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock


def claim_instance_id(state_dir: Path) -> InstanceClaim:
    """The id of the first free slot in ``state_dir/ray-orchestrators`` (blocking: file I/O).

    A slot's file keeps its id across lives; a new slot gets a new random id.
    """
    directory = state_dir / "ray-orchestrators"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for slot in range(_SLOTS):
        fd = open_lock(directory / f"{slot}.id")  # never through a link: its id is written
        if not try_lock(fd):  # another live orchestrator holds it
            os.close(fd)
            continue
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if not _ID.fullmatch(text):
            text = uuid.uuid4().hex
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
            os.fsync(fd)
        return InstanceClaim(instance_id=text, fd=fd)
    return InstanceClaim(instance_id=uuid.uuid4().hex, fd=None)

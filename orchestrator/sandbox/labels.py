"""Container labels that make every Stockade container traceable and reapable.

Each container names the platform, the owning orchestrator process and a
deadline. An owner is ``<boot id>:<PID namespace>/<pid>/<process start ticks>``:
the start time tells a live owner from a recycled pid, the boot id and PID
namespace tell whether the pid can be checked here at all (processes in
containers share the machine's boot id and engine, not its pids).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "BACKEND_LABEL",
    "DEADLINE_LABEL",
    "OWNER_LABEL",
    "PLATFORM_LABEL",
    "PLATFORM_VALUE",
    "PROFILE_LABEL",
    "Owner",
    "container_labels",
    "current_owner",
]

PLATFORM_LABEL = "org.stockade.platform"
PLATFORM_VALUE = "stockade"
OWNER_LABEL = "org.stockade.owner"
DEADLINE_LABEL = "org.stockade.deadline"
PROFILE_LABEL = "org.stockade.profile"
BACKEND_LABEL = "org.stockade.backend"
"""The backend instance (within its owner process) that launched the container."""


@cache
def _boot_id() -> str:
    """Where a pid means this process's pids: the machine's boot and the PID namespace.

    The namespace matters where processes in containers share an engine (a Ray
    node in a container, as Ray's images and KubeRay run them): an owner seen
    from another namespace cannot be checked, and is left to its deadline.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return f"{boot}:unknown-pidns"


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19]  # field 22 of the whole line: start time in clock ticks


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The orchestrator process a container belongs to."""

    boot_id: str
    """``<boot id>:<PID namespace>``: where ``pid`` can be checked."""
    pid: int
    start_ticks: str

    def label(self) -> str:
        """The label value."""
        return f"{self.boot_id}/{self.pid}/{self.start_ticks}"

    @classmethod
    def parse(cls, value: str) -> Owner | None:
        """The owner named by a label, or None when the label is malformed."""
        parts = value.split("/")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(boot_id=parts[0], pid=int(parts[1]), start_ticks=parts[2])

    def is_alive(self) -> bool | None:
        """True or False when checkable here; None when the owner is on another host (or
        boot) or in another PID namespace (a process in another container)."""
        if self.boot_id != _boot_id():
            return None
        return _start_ticks(self.pid) == self.start_ticks


@cache
def _owner_for(pid: int) -> Owner:
    return Owner(boot_id=_boot_id(), pid=pid, start_ticks=_start_ticks(pid) or "0")


def current_owner() -> Owner:
    """The owner identity of this process."""
    return _owner_for(os.getpid())


def container_labels(
    profile: str, *, lifetime_s: float, backend: str | None = None
) -> dict[str, str]:
    """Labels for a new container that must be gone ``lifetime_s`` from now."""
    labels = {
        PLATFORM_LABEL: PLATFORM_VALUE,
        OWNER_LABEL: current_owner().label(),
        DEADLINE_LABEL: f"{time.time() + lifetime_s:.0f}",
        PROFILE_LABEL: profile,
    }
    if backend is not None:
        labels[BACKEND_LABEL] = backend
    return labels

"""This machine's process tree, read from /proc, for the tests' checks of what a process left."""

from __future__ import annotations

import contextlib
from pathlib import Path


def live_parents() -> dict[int, int]:
    """The parent pid of every live process (zombies left out)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            stat = (entry / "stat").read_text()
            # The command name may hold spaces and parentheses: fields follow the last ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    parents = live_parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_line(pid: int) -> list[bytes]:
    """The arguments ``pid`` was started with (empty if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []

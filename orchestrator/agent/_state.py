"""The states of a run, and the moves between them.

``idle → planning → executing ⇄ reflecting → complete | failed | cancelled``:

- ``planning``: memories recalled, the prompt built, the first model turn;
- ``executing``: tool calls through the gateway, and the model turns after them;
- ``reflecting``: the model asked whether the goal is fully achieved;
- ``complete``, ``failed``, ``cancelled``: the end (a run never leaves them).

Any state before the end may move to ``failed`` or ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from orchestrator.errors import UsageError

__all__ = ["TRANSITIONS", "RunStatus", "check_transition"]


class RunStatus(StrEnum):
    """Where a run is."""

    IDLE = "idle"
    PLANNING = "planning"
    EXECUTING = "executing"
    REFLECTING = "reflecting"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self in _ENDS


_ENDS = frozenset({RunStatus.COMPLETE, RunStatus.FAILED, RunStatus.CANCELLED})
_STOP = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})

TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.IDLE: frozenset({RunStatus.PLANNING}) | _STOP,
    RunStatus.PLANNING: frozenset({RunStatus.EXECUTING, RunStatus.REFLECTING, RunStatus.COMPLETE})
    | _STOP,
    RunStatus.EXECUTING: frozenset({RunStatus.REFLECTING, RunStatus.COMPLETE}) | _STOP,
    RunStatus.REFLECTING: frozenset({RunStatus.EXECUTING, RunStatus.COMPLETE}) | _STOP,
    RunStatus.COMPLETE: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
"""Every legal move (staying in a state is not a move)."""


def check_transition(current: RunStatus, new: RunStatus) -> None:
    """Raise :class:`~orchestrator.errors.UsageError` unless ``current → new`` is legal."""
    if new not in TRANSITIONS[current]:
        raise UsageError(f"a run cannot go from {current.value} to {new.value}")

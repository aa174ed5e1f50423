"""The calls of a run as the audit log tells them: approval, intents, outcome, in order.

Each call's records are gathered under its id: the approval records, the
``intent`` written before each attempt and the ``call`` record of its outcome.
A call with intents and no outcome is shown as such (its process died, or could
not write the outcome, after the call may have run). ``stockade audit timeline``
prints it; a run's timeline page reads the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.audit._record import AuditEvent
from orchestrator.audit._verify import tail

__all__ = ["CallEntry", "call_timeline"]

_CALL_EVENTS = frozenset(
    {
        AuditEvent.APPROVAL_REQUESTED.value,
        AuditEvent.APPROVAL_DECIDED.value,
        AuditEvent.INTENT.value,
        AuditEvent.CALL.value,
    }
)


@dataclass(kw_only=True)
class CallEntry:
    """One call's records, in log order."""

    call_id: str
    """The call."""
    run_id: str | None = None
    """Its run."""
    tool: str | None = None
    """The tool."""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    """Its ``approval_requested`` and ``approval_decided`` records."""
    intents: list[dict[str, Any]] = field(default_factory=list)
    """Its ``intent`` records, one per attempt that was about to run."""
    outcome: dict[str, Any] | None = None
    """Its ``call`` record; None when the log has none (yet)."""

    @property
    def unfinished(self) -> bool:
        """It was about to run (an intent exists) and no outcome was recorded."""
        return bool(self.intents) and self.outcome is None

    @property
    def status(self) -> str:
        """The outcome's status, or ``unknown (no outcome recorded)`` for an unfinished call."""
        if self.outcome is not None:
            return str(self.outcome.get("status", "?"))
        return "unknown (no outcome recorded)" if self.intents else "pending"


def _needle(run_id: str | None) -> bytes | None:
    """Bytes every line of a record of ``run_id`` holds, if there are such bytes.

    A plain ASCII id (no quote, backslash, slash or control character) is
    written as itself in quotes by any JSON encoder, canonical or not (a log edited by
    hand, or by a tool, still shows its records; verify tells what changed).
    The few other lines that hold it (an argument quoting it) are dropped by
    the check on the parsed record.
    """
    if run_id is None or not all(" " <= char <= "~" and char not in '"\\/' for char in run_id):
        return None
    return f'"{run_id}"'.encode("ascii")


def call_timeline(path: str | Path, *, run_id: str | None = None) -> list[CallEntry]:
    """Every call of the log (of run ``run_id`` only, if given), in the order each began."""
    entries: dict[str, CallEntry] = {}
    for record in tail(Path(path), containing=_needle(run_id)):
        event, call_id = record.get("event"), record.get("call_id")
        if event not in _CALL_EVENTS or not isinstance(call_id, str):
            continue
        if run_id is not None and record.get("run_id") != run_id:
            continue
        entry = entries.get(call_id)
        if entry is None:
            entry = entries[call_id] = CallEntry(
                call_id=call_id, run_id=record.get("run_id"), tool=record.get("tool")
            )
        if event == AuditEvent.INTENT.value:
            entry.intents.append(record)
        elif event == AuditEvent.CALL.value:
            entry.outcome = record
        else:
            entry.approvals.append(record)
    return list(entries.values())

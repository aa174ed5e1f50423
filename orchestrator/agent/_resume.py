"""What a resumed run does with the calls that were in flight when its process stopped.

The checkpoint names the calls a model turn asked for (it is committed before
any of them goes to the gateway); the audit log says how far each got, since
the gateway writes an ``intent`` record (``fsync``-ed) before an attempt
takes a sandbox and a ``call`` record (the outcome) after:

- **no intent, no outcome** (or ``cancelled``: a server suspending its runs
  cancels their calls): it never reached a sandbox (the policy, a rate limit,
  an approval wait): run it again under the same id, which is how the
  approval gate finds its request, and a decision taken meanwhile applies;
- **an outcome and no intent**: it ended without running (refused, rate
  limited, approval denied): its answer is rebuilt from the outcome;
- **an intent**: it may have run. A tool declared idempotent
  (``@tool(idempotent=True)``) runs again (asking for approval again if its
  policy says so: a decision authorises one execution, and the first one
  consumed it). Any other is **never run again blindly**: it is answered
  ``[interrupted]``, telling the model its effects are unknown (or, when its
  outcome was recorded but its answer was lost, how it ended). Its container
  belonged to the dead process: the reaper removes it when the resuming
  platform starts (its owner label names a process that is gone).

Every call is still answered exactly once: the resumed turn answers each call
of the checkpoint's assistant message, in order, and nothing else does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.agent._model_reply import ModelToolCall
from orchestrator.agent._parts import RunParts
from orchestrator.audit.timeline import CallEntry, call_timeline

__all__ = ["settle_in_flight"]

_UNKNOWN = (
    "the orchestrator stopped while this call was running. It was interrupted and its sandbox "
    "removed; its effects are unknown (it may have done all, part or none of its work) and it "
    "was not run again. Check its effects before deciding whether to repeat it."
)
_CANCELLED = "cancelled"
_ENDED_WITH_NO_RUN = frozenset(
    {"denied", "rate_limited", "approval_denied", "unknown_tool", "invalid_arguments"}
)


def _gave_up(entry: CallEntry) -> bool:
    """No outcome, or ``cancelled``: the process stopped before the call ended."""
    return entry.outcome is None or entry.outcome.get("status") == _CANCELLED


def _ended(entry: CallEntry) -> str:
    outcome = entry.outcome or {}
    status = str(outcome.get("status", "?"))
    error = outcome.get("error")
    if not entry.intents and status in _ENDED_WITH_NO_RUN:
        return f"the call ended without running ({status}){f': {error}' if error else ''}."
    return (
        f"the call ran (status {status}) but the orchestrator stopped before its answer was "
        "kept, so its output is lost; it was not run again. Check its effects before deciding "
        "whether to repeat it."
    )


def _timeline(audit: Path, run_id: str) -> list[CallEntry]:
    return call_timeline(audit, run_id=run_id) if audit.exists() else []


async def settle_in_flight(
    parts: RunParts, run_id: str, calls: Sequence[ModelToolCall], audit: Path | None
) -> Mapping[str, str]:
    """The calls of ``calls`` not to run again, by id, with what the model is told instead."""
    if not calls or audit is None:
        return {}
    entries = {entry.call_id: entry for entry in await asyncio.to_thread(_timeline, audit, run_id)}
    settled: dict[str, str] = {}
    for call in calls:
        entry = entries.get(call.id)
        if entry is None or (not entry.intents and _gave_up(entry)):
            continue  # never reached a sandbox: replayed under its id
        spec = parts.registry.get(call.name) if call.name else None
        if entry.intents and spec is not None and spec.idempotent:
            continue  # safe to run again
        settled[call.id] = _UNKNOWN if _gave_up(entry) else _ended(entry)
    return settled

"""Dry run of a policy: evaluate it against the calls an audit log recorded.

An organisation tries a stricter policy before enforcing it: every recorded
call that reached the policy (its tool existed and its arguments were valid)
is decided again by the new policy, and the calls whose decision would change
are listed. Arguments are replayed as recorded, that is *redacted*: a rule
whose condition looks at a secret's value may decide differently live.

Both kinds of record are read: a call's outcome (``call``) and, for a call
whose outcome is missing (its process died mid-call), the ``intent`` written
before it ran, which holds the same call and decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.audit import REDACTED, AuditEvent, VerifyReport, tail, verify
from orchestrator.errors import ConfigError
from orchestrator.policy import Effect, Policy, evaluate

__all__ = [
    "ReplayChange",
    "ReplayReport",
    "UnfinishedIntents",
    "decided_calls",
    "existing_log",
    "replay",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayChange:
    """One recorded call the new policy would decide differently."""

    seq: int
    ts: str
    call_id: str | None
    run_id: str | None
    principal: str | None
    tool: str
    before: Effect
    before_rule: str | None
    after: Effect
    after_rule: str | None
    reason: str
    """The new policy's reason."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "call_id": self.call_id,
            "run_id": self.run_id,
            "principal": self.principal,
            "tool": self.tool,
            "before": {"decision": self.before.value, "rule": self.before_rule},
            "after": {"decision": self.after.value, "rule": self.after_rule},
            "reason": self.reason,
        }


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    """What the new policy would have decided differently."""

    chain: VerifyReport
    """Whether the log's chain is intact (a broken chain means records may be missing)."""
    calls: int = 0
    """Recorded calls that were decided by a policy, and so replayed."""
    skipped: int = 0
    """Recorded calls that never reached the policy (unknown tool, invalid arguments)."""
    redacted: int = 0
    """Replayed calls whose recorded arguments had redacted values."""
    unfinished: int = 0
    """Replayed calls known only from their intent (no outcome was recorded)."""
    changes: list[ReplayChange] = field(default_factory=list)
    """Calls whose decision would change, in log order."""

    def summary(self) -> dict[str, int]:
        """How many changes of each kind, e.g. ``{"allow -> deny": 3}``."""
        counts = Counter(f"{c.before.value} -> {c.after.value}" for c in self.changes)
        return dict(sorted(counts.items()))


def _redacted(value: Any) -> bool:
    if isinstance(value, str):
        return REDACTED in value
    if isinstance(value, dict):
        return any(_redacted(item) for item in value.values())
    if isinstance(value, list):
        return any(_redacted(item) for item in value)
    return False


def _change(
    policy: Policy, record: dict[str, Any], arguments: dict[str, Any]
) -> ReplayChange | None:
    decided = evaluate(policy, record["tool"], arguments, record.get("principal"))
    before = Effect(record["decision"])
    if decided.decision is before:
        return None
    return ReplayChange(
        seq=record["seq"],
        ts=record.get("ts", ""),
        call_id=record.get("call_id"),
        run_id=record.get("run_id"),
        principal=record.get("principal"),
        tool=record["tool"],
        before=before,
        before_rule=record.get("rule"),
        after=decided.decision,
        after_rule=decided.rule,
        reason=decided.reason,
    )


def existing_log(audit_path: str | Path) -> Path:
    """``audit_path`` as a path, refused (:class:`ConfigError`) when no log is there: a
    mistyped path is no log, not a log of no calls."""
    path = Path(audit_path)
    if not path.is_file():
        raise ConfigError("no such audit log", file=str(path))
    return path


def replay(policy: Policy, audit_path: str | Path) -> ReplayReport:
    """Decide every recorded call again with ``policy``; report the decisions that change."""
    path = existing_log(audit_path)
    chain = verify(path)
    calls = skipped = redacted = 0
    changes: list[ReplayChange] = []

    def decide(record: dict[str, Any]) -> None:
        nonlocal calls, redacted
        calls += 1
        arguments = record.get("arguments") or {}
        redacted += _redacted(arguments)
        change = _change(policy, record, arguments)
        if change is not None:
            changes.append(change)

    try:
        unfinished = UnfinishedIntents()
        for record in decided_calls(path, unfinished=unfinished):
            if record is None:
                skipped += 1
            else:
                decide(record)
        for record in unfinished.records():
            decide(record)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot replay the audit log: {exc!r}", file=str(path)) from exc
    return ReplayReport(
        chain=chain,
        calls=calls,
        skipped=skipped,
        redacted=redacted,
        unfinished=len(unfinished.records()),
        changes=changes,
    )


class UnfinishedIntents:
    """Intents whose call has no outcome (yet): the last intent of each such call."""

    def __init__(self) -> None:
        self._by_call: dict[str, dict[str, Any]] = {}

    def intent(self, record: dict[str, Any]) -> None:
        self._by_call[str(record.get("call_id"))] = record

    def outcome(self, record: dict[str, Any]) -> None:
        self._by_call.pop(str(record.get("call_id")), None)

    def records(self) -> list[dict[str, Any]]:
        return sorted(self._by_call.values(), key=lambda record: int(record["seq"]))


_DECISIONS = frozenset(effect.value for effect in Effect)
_TEXT = (str, type(None))


def _decided(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record``, a call decided by a policy, checked to be one as the gateway writes it.

    A log edited by hand (or by a tool) may hold anything; replaying it must say
    where rather than fail on the first missing or odd field.
    """
    problem = None
    if not isinstance(record.get("seq"), int):
        problem = "no seq"
    elif not isinstance(record.get("tool"), str):
        problem = "no tool name"
    elif record.get("decision") not in _DECISIONS:
        problem = f"decision {record.get('decision')!r} is none of {', '.join(sorted(_DECISIONS))}"
    elif not isinstance(record.get("arguments") or {}, dict):
        problem = "its arguments are not a mapping"
    elif not isinstance(record.get("bounded") or [], list):
        problem = "its bounded is not a list"
    elif not all(isinstance(record.get(key), _TEXT) for key in ("rule", "principal", "run_id")):
        problem = "its rule, principal or run_id is not text"
    if problem is None:
        return record
    raise ConfigError(
        f"the record with seq {record.get('seq')!r} is not a call as Stockade writes it "
        f"({problem}): the log was edited; `stockade audit verify` names the line",
        file=str(path),
    )


def decided_calls(
    path: Path, *, unfinished: UnfinishedIntents | None = None
) -> Iterator[dict[str, Any] | None]:
    """The ``call`` records of the log in order, None for each call that never reached the
    policy; intents are handed to ``unfinished``, which forgets those whose outcome came.

    A record unlike any the gateway writes raises :class:`ConfigError` naming its seq.
    """
    for record in tail(path):
        event = record.get("event")
        if event == AuditEvent.INTENT.value:
            if unfinished is not None:
                unfinished.intent(_decided(record, path))
            continue
        if event != AuditEvent.CALL.value:
            continue
        if unfinished is not None:
            unfinished.outcome(record)
        yield _decided(record, path) if "decision" in record else None

"""Loop and abuse detection: pure functions over what the run's tool calls answered.

After each model turn the loop hands :func:`observe` the outcomes of the
turn's calls; it returns the new :class:`DetectionState` (a serialisable part
of the run's state) and, when a pattern reached its threshold, a
:class:`Finding`. Patterns (thresholds in
:class:`~orchestrator.agent.DetectionSettings`):

- ``repeated_call``: the same call (tool and arguments) with the same answer,
  again and again — an answer that changes (a job being polled that moves on)
  is progress and starts the count again;
- ``repeated_error``: the same failure again and again, whatever the arguments;

(calls asked for in one turn count once per distinct call and error: they are
one decision of the model)
- ``alternating``: two calls taking turns with unchanged answers;
- ``no_progress``: turns in a row in which no call succeeded with an answer
  not seen before in the run (an empty model turn counts too);
- ``denials``: calls refused by the policy or an approver, over the run.

Calls are compared by digests of their canonical arguments and answers, with
numbers in error messages blurred (``retry after 0.8 s`` and ``retry after
0.4 s`` are the same error).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.agent._config import DetectionSettings
from orchestrator.strict import StrictModel

__all__ = ["CallOutcome", "DetectionState", "Finding", "observe", "outcome_of"]

_REFUSED = frozenset({"denied", "approval_denied"})
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WINDOW = 64


def _digest(*parts: str) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    for part in parts:
        hasher.update(part.encode("utf-8", "replace"))
        hasher.update(b"\x00")
    return hasher.hexdigest()


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return arguments


class CallOutcome(StrictModel):
    """One tool call as detection sees it."""

    tool: str
    """The tool (for messages)."""
    call: str
    """Digest of the tool and its canonical arguments."""
    answer: str
    """Digest of the status, output and error."""
    failed: bool
    """The call did not succeed."""
    error: str | None
    """Digest of the tool and its error with numbers blurred, when it failed."""
    refused: bool
    """The policy or an approver refused it."""


def outcome_of(
    tool: str, arguments: str, *, status: str, output: str, error: str | None
) -> CallOutcome:
    """The :class:`CallOutcome` of a call of ``tool`` with ``arguments`` that ended so."""
    failed = status != "ok"
    return CallOutcome(
        tool=tool,
        call=_digest(tool, _canonical(arguments)),
        answer=_digest(status, output, error or ""),
        failed=failed,
        error=_digest(tool, status, _NUMBER.sub("#", error or output)) if failed else None,
        refused=status in _REFUSED,
    )


class DetectionState(StrictModel):
    """What detection remembers between turns."""

    recent: tuple[CallOutcome, ...] = ()
    """The latest outcomes, oldest first (a bounded window)."""
    seen: frozenset[str] = frozenset()
    """Digests of (call, answer) pairs that succeeded so far."""
    quiet_turns: int = 0
    """Turns in a row without progress."""
    denials: int = 0
    """Refused calls since the start (or the last intervention)."""

    def reset(self) -> DetectionState:
        """After an intervention: every pattern has to build up again from here."""
        return DetectionState(seen=self.seen)


@dataclass(frozen=True, kw_only=True)
class Finding:
    """A pattern that reached its threshold."""

    pattern: str
    """``repeated_call``, ``repeated_error``, ``alternating``, ``no_progress`` or ``denials``."""
    detail: str
    """What was seen, in words the model (and the operator) can read."""


def _trailing(recent: Sequence[CallOutcome], same: Callable[[CallOutcome], bool]) -> int:
    count = 0
    for outcome in reversed(recent):
        if not same(outcome):
            break
        count += 1
    return count


def _repeated_call(recent: Sequence[CallOutcome], threshold: int) -> Finding | None:
    last = recent[-1]
    count = _trailing(recent, lambda o: o.call == last.call and o.answer == last.answer)
    if count < threshold:
        return None
    return Finding(
        pattern="repeated_call",
        detail=f"{last.tool} was called {count} times in a row with the same arguments "
        "and got the same answer each time",
    )


def _repeated_error(recent: Sequence[CallOutcome], threshold: int) -> Finding | None:
    last = recent[-1]
    if last.error is None:
        return None
    count = _trailing(recent, lambda o: o.error == last.error)
    if count < threshold:
        return None
    return Finding(
        pattern="repeated_error",
        detail=f"{last.tool} failed {count} times in a row with the same error",
    )


def _alternating(recent: Sequence[CallOutcome], threshold: int) -> Finding | None:
    keys = [(o.call, o.answer) for o in recent]
    if len(keys) < 4 or keys[-1] == keys[-2]:
        return None
    length = 2
    while length < len(keys) and keys[-length - 1] == keys[-length + 1]:
        length += 1
    rounds = length // 2
    if rounds < threshold:
        return None
    return Finding(
        pattern="alternating",
        detail=f"{recent[-2].tool} and {recent[-1].tool} were called in turn {rounds} times "
        "with unchanged answers",
    )


def _distinct(outcomes: Sequence[CallOutcome]) -> list[CallOutcome]:
    """One turn's outcomes with repeats within the turn dropped.

    Calls asked for together are one decision of the model: ten writes
    refused by one rate limit in one turn are one failure, not ten in a row.
    """
    kept: list[CallOutcome] = []
    answers: set[tuple[str, str]] = set()
    errors: set[str] = set()
    for outcome in outcomes:
        key = (outcome.call, outcome.answer)
        if key in answers or (outcome.error is not None and outcome.error in errors):
            continue
        answers.add(key)
        if outcome.error is not None:
            errors.add(outcome.error)
        kept.append(outcome)
    return kept


def observe(
    state: DetectionState, outcomes: Sequence[CallOutcome], settings: DetectionSettings
) -> tuple[DetectionState, Finding | None]:
    """Take in one model turn's call outcomes (none: a turn without calls).

    Returns the new state and the first pattern that reached its threshold.
    """
    recent = (*state.recent, *_distinct(outcomes))[-_WINDOW:]
    fresh = {_digest(o.call, o.answer) for o in outcomes if not o.failed}
    progress = bool(fresh - state.seen)
    new = DetectionState(
        recent=recent,
        seen=state.seen | fresh,
        quiet_turns=0 if progress else state.quiet_turns + 1,
        denials=state.denials + sum(o.refused for o in outcomes),
    )
    return new, _first_finding(new, bool(outcomes), settings)


def _first_finding(
    state: DetectionState, had_calls: bool, settings: DetectionSettings
) -> Finding | None:
    if settings.denials and state.denials >= settings.denials:
        return Finding(
            pattern="denials",
            detail=f"{state.denials} calls of this run were refused by the policy or an approver",
        )
    if had_calls and state.recent:
        checks = (
            (settings.repeated_error, _repeated_error),
            (settings.repeated_call, _repeated_call),
            (settings.alternating, _alternating),
        )
        for threshold, check in checks:
            if threshold and (found := check(state.recent, threshold)):
                return found
    if settings.no_progress_turns and state.quiet_turns >= settings.no_progress_turns:
        return Finding(
            pattern="no_progress",
            detail=f"{state.quiet_turns} turns in a row brought no successful call with a "
            "new answer",
        )
    return None

"""Run states, events and the run's state: legal moves, and values that round-trip as JSON."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.agent import (
    ModelToolCall,
    RunState,
    RunStatus,
    StateChanged,
    TokenUsage,
    ToolCallFinished,
    event_adapter,
)
from orchestrator.agent._state import TRANSITIONS, check_transition
from orchestrator.errors import UsageError


def test_the_documented_path_is_legal() -> None:
    path = [
        RunStatus.IDLE,
        RunStatus.PLANNING,
        RunStatus.EXECUTING,
        RunStatus.REFLECTING,
        RunStatus.EXECUTING,
        RunStatus.REFLECTING,
        RunStatus.COMPLETE,
    ]
    for current, new in itertools.pairwise(path):
        check_transition(current, new)


def test_every_state_before_the_end_may_fail_or_be_cancelled() -> None:
    for state in RunStatus:
        ends = {RunStatus.FAILED, RunStatus.CANCELLED}
        assert (ends <= TRANSITIONS[state]) is (not state.finished)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (RunStatus.IDLE, RunStatus.EXECUTING),
        (RunStatus.COMPLETE, RunStatus.EXECUTING),
        (RunStatus.FAILED, RunStatus.COMPLETE),
        (RunStatus.EXECUTING, RunStatus.PLANNING),
        (RunStatus.CANCELLED, RunStatus.FAILED),
    ],
)
def test_illegal_moves_are_refused(current: RunStatus, new: RunStatus) -> None:
    with pytest.raises(UsageError, match=f"from {current.value} to {new.value}"):
        check_transition(current, new)


def test_events_round_trip() -> None:
    events = [
        StateChanged(
            run_id="r", at=1.0, state=RunStatus.PLANNING, previous=RunStatus.IDLE, iteration=0
        ),
        ToolCallFinished(
            run_id="r",
            at=2.0,
            iteration=1,
            call_id="c",
            model_id="call_0",
            tool="files.read",
            status="skipped",
            decision=None,
            duration_s=0.0,
        ),
    ]
    for event in events:
        assert event_adapter.validate_json(event.model_dump_json()) == event


def test_the_run_state_round_trips() -> None:
    state = RunState(run_id="r", goal="g", principal="p")
    state.append({"role": "system", "content": "s"}, 3)
    state.in_flight = [
        ModelToolCall(id="c1", model_id="call_0", name="files__read", arguments='{"path": "a"')
    ]
    state.usage = TokenUsage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    state.count_call("ok")
    state.count_call("ok")
    copy = RunState.model_validate_json(state.model_dump_json())
    assert copy == state and copy.tool_calls == {"ok": 2}

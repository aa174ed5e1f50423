"""Loop and abuse detection: pure logic over call outcomes, with plain values."""

from __future__ import annotations

from orchestrator.agent import DetectionSettings
from orchestrator.agent._detect import CallOutcome, DetectionState, Finding, observe, outcome_of

SETTINGS = DetectionSettings(
    repeated_call=3, repeated_error=3, alternating=3, no_progress_turns=4, denials=3
)


def ok(
    tool: str = "files.read", arguments: str = '{"path": "a"}', output: str = "x"
) -> CallOutcome:
    return outcome_of(tool, arguments, status="ok", output=output, error=None)


def failed(
    tool: str = "files.read", arguments: str = '{"path": "a"}', error: str = "no such file"
) -> CallOutcome:
    return outcome_of(tool, arguments, status="error", output="", error=error)


def refused(tool: str = "shell.run") -> CallOutcome:
    return outcome_of(tool, "{}", status="denied", output="", error="policy says no")


def run(turns: list[list[CallOutcome]], settings: DetectionSettings = SETTINGS) -> list[Finding]:
    state, found = DetectionState(), []
    for outcomes in turns:
        state, finding = observe(state, outcomes, settings)
        if finding:
            found.append(finding)
            state = state.reset()
    return found


def test_the_same_call_with_the_same_answer_is_a_loop() -> None:
    found = run([[ok()], [ok()], [ok()]])
    assert [f.pattern for f in found] == ["repeated_call"]
    assert "files.read was called 3 times" in found[0].detail


def test_arguments_are_compared_canonically() -> None:
    found = run(
        [
            [ok(arguments='{"a": 1, "b": 2}')],
            [ok(arguments='{"b":2,"a":1}')],
            [ok(arguments='{"a": 1,  "b": 2}')],
        ]
    )
    assert [f.pattern for f in found] == ["repeated_call"]


def test_polling_a_job_that_moves_on_is_not_stuck() -> None:
    turns = [[ok(output=f"{percent}% done")] for percent in range(0, 100, 10)]
    assert run(turns) == []


def test_polling_with_a_higher_threshold_is_not_stuck() -> None:
    patient = SETTINGS.model_copy(update={"repeated_call": 10, "no_progress_turns": 10})
    assert run([[ok(output="running")]] * 6, patient) == []


def test_the_same_error_again_is_a_loop_whatever_the_arguments() -> None:
    found = run([[failed(arguments=f'{{"path": "{n}"}}')] for n in range(3)])
    assert [f.pattern for f in found] == ["repeated_error"]


def test_errors_differing_only_in_numbers_are_the_same() -> None:
    turns = [[failed(error=f"rate limit reached; try again in 0.{n} s")] for n in range(3)]
    assert [f.pattern for f in run(turns)] == ["repeated_error"]


def test_calls_of_one_turn_count_once() -> None:
    """Ten writes refused by one rate limit in one turn are one decision of the model."""
    burst = [
        failed(tool="files.write", arguments=f'{{"path": "{n}"}}', error="rate limited")
        for n in range(10)
    ]
    assert run([burst]) == []
    assert run([[ok()] * 5]) == []


def test_two_calls_taking_turns_is_a_loop() -> None:
    a, b = ok(arguments='{"path": "a"}'), ok(arguments='{"path": "b"}')
    found = run([[a], [b], [a], [b], [a], [b]])
    assert found and found[0].pattern in {"alternating", "no_progress"}
    alternating = SETTINGS.model_copy(update={"no_progress_turns": 0})
    assert [f.pattern for f in run([[a], [b], [a], [b], [a], [b]], alternating)] == ["alternating"]


def test_turns_without_progress() -> None:
    settings = SETTINGS.model_copy(update={"repeated_error": 0})
    turns = [[], [failed(error="a")], [failed(error="b")], []]
    assert [f.pattern for f in run(turns, settings)] == ["no_progress"]
    # A successful call with a new answer is progress.
    assert (
        run([[], [failed(error="a")], [ok(output="new")], [], [failed(error="b")]], settings) == []
    )


def test_denials_are_abuse() -> None:
    found = run([[refused()], [ok(output="1")], [refused("files.delete")], [refused()]])
    assert [f.pattern for f in found] == ["denials"]
    assert "3 calls of this run were refused" in found[0].detail


def test_zero_switches_every_pattern_off() -> None:
    off = DetectionSettings(
        repeated_call=0, repeated_error=0, alternating=0, no_progress_turns=0, denials=0
    )
    noisy = [[ok()], [ok()], [ok()], [failed()], [failed()], [failed()], [refused()]] * 3
    assert run(noisy) != []
    assert run(noisy, off) == []


def test_after_an_intervention_the_pattern_builds_up_again() -> None:
    state, first = DetectionState(), None
    for _ in range(3):
        state, first = observe(state, [ok()], SETTINGS)
    assert first is not None
    state = state.reset()
    state, again = observe(state, [ok()], SETTINGS)
    assert again is None, "one more repeat right after the warning is not yet a second loop"


def test_the_state_survives_a_checkpoint() -> None:
    state, _ = observe(DetectionState(), [ok(), failed(), refused()], SETTINGS)
    assert DetectionState.model_validate_json(state.model_dump_json()) == state

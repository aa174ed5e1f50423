"""Reading the model's reflection, however it was written."""

from __future__ import annotations

import pytest

from orchestrator.agent._reflect import REFLECTION_PROMPT, parse_reflection, reflection_messages


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ('{"complete": true, "reason": "done"}', True),
        ('{"complete": false, "reason": "no file", "missing": "write it"}', False),
        ('```json\n{"complete": "yes", "reason": "ok"}\n```', True),
        ('Sure! Here it is: {"goal_achieved": "no", "reason": "x"} Hope that helps.', False),
        ('{"Complete": "False", "Reason": "x"}', False),
        ('{"done": true}', True),
    ],
)
def test_verdicts_are_found(text: str, complete: bool) -> None:
    assert parse_reflection(text).complete is complete


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "{not json",
        "yes",
        "[true]",
        '{"complete": "maybe"}',
        '{"reason": "x"}',
        "{" * 10_000 + "}" * 10_000,
    ],
)
def test_no_verdict_is_not_an_error(text: str | None) -> None:
    reflection = parse_reflection(text)
    assert reflection.complete is None and reflection.reason


def test_fields_are_bounded_text() -> None:
    reflection = parse_reflection(
        '{"complete": false, "reason": "' + "r" * 5000 + '", "missing": ["a", "b"], "lesson": 3}'
    )
    assert reflection.complete is False
    assert len(reflection.reason) == 1000 and reflection.missing == '["a", "b"]'
    assert reflection.lesson == "3"


def test_the_request_asks_for_json_after_the_conversation() -> None:
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "goal"}]
    request = reflection_messages(conversation)
    assert request[:2] == conversation and request[-1]["content"] == REFLECTION_PROMPT
    assert "JSON" in REFLECTION_PROMPT, "JSON mode needs the word in the messages"

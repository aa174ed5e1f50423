"""Context management: what is summarised, and that turns are never split (plain values)."""

from __future__ import annotations

from typing import Any

from orchestrator.agent._context import (
    HEAD,
    SUMMARY_MARK,
    message_tokens,
    plan_compaction,
    summary_message,
    transcript,
)

SYSTEM = {"role": "system", "content": "You are an agent."}
GOAL = {"role": "user", "content": "Do the thing."}


def turn(number: int, calls: int = 2, size: int = 400) -> list[dict[str, Any]]:
    """An assistant message asking for ``calls`` tools, and their answers."""
    ids = [f"call_{number}_{n}" for n in range(calls)]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "files__read", "arguments": "{}"}}
            for i in ids
        ],
    }
    return [assistant, *({"role": "tool", "tool_call_id": i, "content": "x" * size} for i in ids)]


def conversation(turns: int, **options: Any) -> list[dict[str, Any]]:
    messages = [SYSTEM, GOAL]
    for number in range(turns):
        messages += turn(number, **options)
    return messages


def paired(messages: list[dict[str, Any]]) -> bool:
    """Every tool call is answered right after its assistant message, and nothing else is."""
    expected: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            if not expected or message["tool_call_id"] != expected.pop(0):
                return False
            continue
        if expected:
            return False
        expected = [call["id"] for call in message.get("tool_calls") or ()]
    return not expected


def total(messages: list[dict[str, Any]]) -> int:
    return sum(message_tokens(m) for m in messages)


def test_nothing_is_summarised_under_the_threshold() -> None:
    messages = conversation(3)
    budget = int(total(messages) / 0.8) + 10
    assert (
        plan_compaction(messages, budget_tokens=budget, summarise_at=0.8, keep_recent_turns=1)
        is None
    )


def test_older_turns_go_and_the_latest_stay_whole() -> None:
    messages = conversation(6)
    plan = plan_compaction(
        messages, budget_tokens=total(messages), summarise_at=0.8, keep_recent_turns=2
    )
    assert plan is not None
    kept = [*messages[:HEAD], summary_message("summary"), *messages[plan.end :]]
    assert kept[:2] == [SYSTEM, GOAL], "the system prompt and the goal stay"
    assert messages[plan.end]["role"] == "assistant", "the cut falls before an assistant message"
    assert kept[3:] == conversation(6)[-2 * 3 :], "the two latest turns are kept whole"
    assert paired(kept[3:])
    assert plan.tokens_before == total(messages)


def test_the_cut_never_separates_a_call_from_its_results() -> None:
    for turns in range(1, 8):
        for calls in range(1, 4):
            messages = conversation(turns, calls=calls)
            for keep in range(1, 4):
                plan = plan_compaction(
                    messages, budget_tokens=1, summarise_at=0.8, keep_recent_turns=keep
                )
                if plan is None:
                    assert turns == 1, "with one turn there is nothing to summarise"
                    continue
                assert messages[plan.end]["role"] == "assistant"
                assert paired(messages[HEAD : plan.end]) and paired(messages[plan.end :])


def test_messages_added_by_stockade_go_with_their_turn() -> None:
    messages = conversation(3)
    messages.insert(HEAD + 3, {"role": "user", "content": "Stockade loop detection: …"})
    plan = plan_compaction(messages, budget_tokens=1, summarise_at=0.8, keep_recent_turns=1)
    assert plan is not None and messages[plan.end]["role"] == "assistant"


def test_an_earlier_summary_is_summarised_again() -> None:
    messages = [SYSTEM, GOAL, summary_message("before"), *turn(1), *turn(2)]
    plan = plan_compaction(messages, budget_tokens=1, summarise_at=0.8, keep_recent_turns=1)
    assert plan is not None and plan.end == HEAD + 1 + 3
    assert messages[HEAD]["content"].startswith(SUMMARY_MARK)


def test_the_tool_schemas_count_against_the_budget() -> None:
    messages = conversation(3)
    budget = int(total(messages) / 0.8) + 10
    assert (
        plan_compaction(
            messages, budget_tokens=budget, summarise_at=0.8, keep_recent_turns=1, fixed_tokens=500
        )
        is not None
    )


def test_the_transcript_names_calls_and_results() -> None:
    text = transcript(turn(7, calls=1, size=10_000))
    assert "called files__read({})" in text and "[tool result call_7_0]" in text
    assert len(text) < 5_000, "each message is cut to a fair length"

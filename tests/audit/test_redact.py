"""Redaction of secrets in what the audit log keeps, in linear time (RE2)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.audit import REDACTED, redact
from orchestrator.audit._redact import MAX_REPLACEMENTS, _compiled_as_given
from orchestrator.tools import MAX_ARGUMENT_BYTES

LARGEST = MAX_ARGUMENT_BYTES - len(json.dumps({"x": ""}))
"""The longest single string argument the registry admits."""
NESTED = "(a+)+$"
"""Exponential in Python's backtracking re: each extra `a` doubles the work."""


def cpu_seconds(action: Callable[[], Any]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


PATTERNS = [r"sk-[A-Za-z0-9]{10,}", r"(?i)password=\S+", r"(?i)^(api_key|authorization)$"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("use sk-0123456789abc please", f"use {REDACTED} please"),
        ("PASSWORD=hunter2 and more", f"{REDACTED} and more"),
        ("nothing secret", "nothing secret"),
        (42, 42),
        (None, None),
        (True, True),
        (["sk-0123456789ab", "x", 3], [REDACTED, "x", 3]),
        (("sk-0123456789ab",), [REDACTED]),
        ({"api_key": "anything", "API_KEY": 12345}, {"api_key": REDACTED, "API_KEY": REDACTED}),
        ({"headers": {"Authorization": ["Bearer x"]}}, {"headers": {"Authorization": REDACTED}}),
        (
            {"nested": {"deep": ["a", {"k": "password=x y"}]}},
            {"nested": {"deep": ["a", {"k": f"{REDACTED} y"}]}},
        ),
        ({"key_name": "fine"}, {"key_name": "fine"}),
    ],
)
def test_redact(value: Any, expected: Any) -> None:
    assert redact(value, PATTERNS) == expected


def test_redact_accepts_compiled_patterns_and_leaves_the_input_alone() -> None:
    original = {"code": "sk-0123456789ab"}
    assert redact(original, [re.compile(PATTERNS[0])]) == {"code": REDACTED}
    assert original == {"code": "sk-0123456789ab"}
    assert redact(original, []) is original


@pytest.mark.parametrize(
    "value",
    [
        {"x": "a" * 40 + "!"},  # in a value
        {"a" * 40 + "!": "x"},  # in a key
        {"x": "a" * (LARGEST - 1) + "!"},
    ],
    ids=["value", "key", "largest"],
)
def test_a_nested_quantifier_in_redact_costs_nothing(value: dict[str, str]) -> None:
    assert cpu_seconds(lambda: redact(value, [NESTED])) < 0.1


def test_a_match_per_character_with_a_look_to_the_end_is_bounded() -> None:
    # Every match is one "a", but only the end of the text shows that `.*z`
    # fails: each match costs a pass over the rest. Python's re took minutes.
    text = "a" * LARGEST
    redacted: list[Any] = []
    assert cpu_seconds(lambda: redacted.append(redact(text, ["a(?:.*z)?"]))) < 1.0
    assert redacted[0] == REDACTED * (MAX_REPLACEMENTS + 1)


def test_past_the_cap_the_rest_of_the_string_is_replaced_whole() -> None:
    text = " ".join(f"sk-{n:024d}" for n in range(MAX_REPLACEMENTS + 50)) + " tail"
    redacted = redact(text, [r"sk-\d{24}"])
    assert redacted == " ".join([REDACTED] * MAX_REPLACEMENTS) + " " + REDACTED
    few = " ".join(f"sk-{n:024d}" for n in range(3)) + " tail"
    assert redact(few, [r"sk-\d{24}"]) == f"{REDACTED} {REDACTED} {REDACTED} tail"


def test_inline_flags_stay_inside_their_own_pattern() -> None:
    # redact() tries all patterns as one alternation first; (?i) must not leak.
    assert redact({"x": "TOKEN secret"}, ["(?i)secret", "token"]) == {"x": f"TOKEN {REDACTED}"}
    assert redact({"x": "ab"}, [re.compile("A", re.IGNORECASE)]) == {"x": f"{REDACTED}b"}
    with pytest.raises(ValueError, match="verbose"):
        redact("a", [re.compile("a  # comment", re.VERBOSE)])


def test_strings_remembered_clean_never_hide_a_secret() -> None:
    """Short strings found clean are remembered per pattern list; secrets never are."""
    patterns = (r"sk-[a-z]{8}",)
    clean, secret = "print(1)", "key = sk-abcdefgh"
    for _ in range(3):  # the second and third time come from what was remembered
        assert redact({"code": clean, "key": secret}, patterns) == {
            "code": clean,
            "key": "key = [REDACTED]",
        }
    remembered = _compiled_as_given(patterns).clean
    assert clean in remembered and "code" in remembered and secret not in remembered
    # Another pattern list remembers on its own: "print(1)" is a secret to this one.
    assert redact(clean, [r"print\(\d\)"]) == REDACTED
    assert redact(clean, patterns) == clean

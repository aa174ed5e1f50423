"""Redaction of secrets in what the audit log keeps."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.audit import REDACTED, redact

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

"""Reflection: asking the model, in JSON mode, whether the goal has been fully achieved.

The answer is read as hostile text: JSON is looked for in code fences and
around prose, the verdict under several names and spellings (``true``,
``"yes"``, ``"complete"``…). An answer that yields no verdict is not an
error: :func:`parse_reflection` says so (``complete is None``) and the loop
keeps the final answer it has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["REFLECTION_PROMPT", "Reflection", "parse_reflection", "reflection_messages"]

REFLECTION_PROMPT = (
    "Look back at the goal and at everything done above. Has the goal been fully "
    "achieved? Answer with a JSON object only, of this shape: "
    '{"complete": true or false, "reason": "why, in one sentence", '
    '"missing": "what is still to do (empty when complete)", '
    '"lesson": "one sentence worth remembering for similar goals next time"}'
)
"""The question; it names JSON, as JSON mode requires of the messages."""

_VERDICT_KEYS = ("complete", "completed", "achieved", "goal_achieved", "fully_achieved", "done")
_YES = frozenset({"true", "yes", "y", "complete", "completed", "achieved", "done"})
_NO = frozenset({"false", "no", "n", "incomplete", "not complete", "not achieved"})
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TEXT_LIMIT = 1_000


@dataclass(frozen=True, kw_only=True)
class Reflection:
    """The model's verdict on its own work."""

    complete: bool | None
    """Whether the goal is achieved; ``None`` when no verdict could be read."""
    reason: str
    """Why (or why no verdict could be read)."""
    missing: str = ""
    """What is left to do, when incomplete."""
    lesson: str = ""
    """What to remember for similar goals."""


def reflection_messages(conversation: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The request: the conversation so far, then the question."""
    return [*(dict(m) for m in conversation), {"role": "user", "content": REFLECTION_PROMPT}]


def _objects(text: str) -> list[Any]:
    """JSON values found in ``text``: the whole, each fenced block, the outermost braces."""
    candidates = [text, *_FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    found = []
    for candidate in candidates:
        try:
            found.append(json.loads(candidate))
        except (ValueError, RecursionError):
            continue
    return found


def _verdict(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.strip()[:_TEXT_LIMIT]


def parse_reflection(text: str | None) -> Reflection:
    """The verdict in the model's answer, however it was written; never raises."""
    if not text or not text.strip():
        return Reflection(complete=None, reason="the model gave no answer to the reflection")
    for value in _objects(text):
        if not isinstance(value, Mapping):
            continue
        lowered = {str(key).lower(): item for key, item in value.items()}
        for key in _VERDICT_KEYS:
            verdict = _verdict(lowered.get(key))
            if verdict is not None:
                return Reflection(
                    complete=verdict,
                    reason=_text(lowered.get("reason")) or "(no reason given)",
                    missing=_text(lowered.get("missing")),
                    lesson=_text(lowered.get("lesson")),
                )
    return Reflection(
        complete=None, reason="the reflection's answer held no readable verdict (not JSON)"
    )

"""Secrets out of what goes into the audit log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["REDACTED", "redact"]

REDACTED = "[REDACTED]"
"""What a secret is replaced with."""


def redact(value: Any, patterns: Sequence[str | re.Pattern[str]]) -> Any:
    """A copy of ``value`` with secrets replaced by ``[REDACTED]``.

    In every string (at any depth) each match of a pattern is replaced; in a
    mapping, an entry whose key matches a pattern has its whole value replaced,
    so ``(?i)^(password|api_key)$`` hides ``{"password": ...}``. Keys stay as
    they are; numbers and other scalars pass through. The input is not changed.
    """
    compiled = [re.compile(pattern) for pattern in patterns]
    return _redact(value, compiled) if compiled else value


def _redact(value: Any, patterns: list[re.Pattern[str]]) -> Any:
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and any(p.search(key) for p in patterns)
            else _redact(item, patterns)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item, patterns) for item in value]
    return value

"""Summarising old short-term notes: the interface, and the default that needs no model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from orchestrator.agent.memory._records import MemoryRecord

__all__ = ["ExtractiveSummariser", "Summariser", "extractive_summary"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ELLIPSIS = "…"


class Summariser(Protocol):
    """Turns several memories into one short text (the agent may pass one that asks its model)."""

    async def __call__(self, memories: Sequence[MemoryRecord]) -> str:
        """A summary of ``memories`` (oldest first)."""
        ...


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + _ELLIPSIS


def extractive_summary(texts: Sequence[str], *, max_chars: int = 600) -> str:
    """The first sentence of each text, each cut to a fair share of ``max_chars``, one per line.

    Deterministic and model-free: a truncating extractive summary. The result
    never exceeds ``max_chars``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    firsts = [_SENTENCE_END.split(text.strip(), maxsplit=1)[0] for text in texts if text.strip()]
    if not firsts:
        return ""
    share = max(max_chars // len(firsts) - 3, 8)  # "- " and the newline
    lines = [f"- {_clip(first, share)}" for first in firsts]
    return _clip("\n".join(lines), max_chars)


class ExtractiveSummariser:
    """The default :class:`Summariser`: :func:`extractive_summary` of the memories' contents."""

    def __init__(self, max_chars: int = 600) -> None:
        """Summaries of at most ``max_chars`` characters."""
        self._max_chars = max_chars

    async def __call__(self, memories: Sequence[MemoryRecord]) -> str:
        """The first sentence of each memory, clipped."""
        return extractive_summary([m.content for m in memories], max_chars=self._max_chars)

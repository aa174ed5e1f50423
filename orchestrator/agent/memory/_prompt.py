"""Recalled memories as a section of the system prompt."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.agent.memory._records import MemoryKind, RecalledMemory

__all__ = ["MemoryContext", "memory_context"]

_HEADER = (
    "Memories from earlier work that may help with this goal (most relevant first;"
    " they may be out of date):"
)
_ENTRY_CHARS = 600


@dataclass(frozen=True, kw_only=True)
class MemoryContext:
    """What recall adds to a run's system prompt, and which memories it used."""

    text: str
    """The prompt section; empty when nothing relevant was found."""
    recalled: tuple[RecalledMemory, ...]
    """The memories in it, best first."""

    @property
    def ids(self) -> tuple[int, ...]:
        """Long-term ids of the memories used (for the run's state and log)."""
        return tuple(r.memory.id for r in self.recalled if r.source == "long_term")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _entry(recalled: RecalledMemory) -> str:
    memory = recalled.memory
    day = time.strftime("%Y-%m-%d", time.gmtime(memory.created_at))
    goal = memory.metadata.get("goal")
    if memory.kind is MemoryKind.LESSON:
        origin = f' on the goal "{_clip(str(goal), 160)}"' if goal else ""
        head = f"Lesson from an earlier run{origin} ({day})"
    elif memory.kind is MemoryKind.RUN:
        success = memory.metadata.get("success")
        outcome = "succeeded" if success is True else "failed" if success is False else "ended"
        head = f"Earlier run that {outcome} ({day})"
    else:
        head = f"{memory.kind.value.capitalize()} ({day})"
    return f"- {head}: {_clip(memory.content, _ENTRY_CHARS)}"


def memory_context(recalled: Sequence[RecalledMemory], *, max_chars: int = 2000) -> MemoryContext:
    """The prompt section for ``recalled`` (best first): whole entries only, within ``max_chars``.

    Its text is empty when ``recalled`` is empty or not even one entry fits;
    its ``recalled`` lists the memories that made it in.
    """
    lines = [_HEADER]
    used = len(_HEADER)
    included: list[RecalledMemory] = []
    for memory in recalled:
        entry = _entry(memory)
        if used + 1 + len(entry) > max_chars:
            break
        lines.append(entry)
        included.append(memory)
        used += 1 + len(entry)
    return MemoryContext(text="\n".join(lines) if included else "", recalled=tuple(included))

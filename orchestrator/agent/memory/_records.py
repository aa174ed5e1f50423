"""What one memory is: its kind, content, time, metadata and embedding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "MemoryKind",
    "MemoryRecord",
    "MetadataValue",
    "NewMemory",
    "RecalledMemory",
    "Vector",
    "Vectors",
]

Vector = npt.NDArray[np.float32]
"""One embedding: float32, L2-normalised."""
Vectors = npt.NDArray[np.float32]
"""Embeddings as the rows of a 2-D float32 array, each L2-normalised."""
MetadataValue = str | int | float | bool | None
"""A metadata value: a JSON scalar, so it round-trips through the database unchanged."""


class MemoryKind(StrEnum):
    """What a memory records (and how the prompt introduces it)."""

    RUN = "run"
    """A finished run: its goal, its outcome and its answer."""
    LESSON = "lesson"
    """What to do differently next time, drawn from a failed or incomplete run."""
    FACT = "fact"
    """Something learned that stays true beyond one run."""
    NOTE = "note"
    """An observation within a run (short-term)."""
    SUMMARY = "summary"
    """Older short-term notes, summarised into one."""


@dataclass(frozen=True, kw_only=True)
class NewMemory:
    """A memory about to be stored: what the caller gives, before it has an id."""

    scope: str
    """Whose memory it is: ``principal:…`` or ``namespace:…`` (see :func:`memory_scope`)."""
    kind: MemoryKind
    """What it records."""
    content: str
    """The text recalled into the prompt."""
    key: str
    """The text its embedding is made from: the goal for runs and lessons, else the content."""
    created_at: float
    """Unix time it was made."""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    """Free-form facts about it (run id, success, tool counts…)."""


@dataclass(frozen=True, kw_only=True)
class MemoryRecord:
    """A stored memory."""

    id: int
    """Its id within its store (the database row for long-term memories)."""
    scope: str
    """Whose memory it is."""
    kind: MemoryKind
    """What it records."""
    content: str
    """The text recalled into the prompt."""
    key: str
    """The text its embedding was made from."""
    created_at: float
    """Unix time it was made."""
    metadata: Mapping[str, MetadataValue]
    """Free-form facts about it."""
    embedding: Vector = field(compare=False, repr=False)
    """Its embedding (float32, L2-normalised)."""


@dataclass(frozen=True, kw_only=True)
class RecalledMemory:
    """A memory found relevant to a query."""

    memory: MemoryRecord
    """The memory."""
    score: float
    """Cosine similarity of its embedding to the query's, in [-1, 1]."""
    source: Literal["short_term", "long_term"]
    """Which store it came from."""

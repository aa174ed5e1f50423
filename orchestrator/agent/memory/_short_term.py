"""Short-term memory: one run's recent notes, bounded, the oldest folded into a summary.

Held in the process only. When a note would take the store past its
capacity, the oldest half (summaries included) are replaced by one
``summary`` memory written by the :class:`Summariser`, so a long run keeps a
compressed account of its beginning instead of forgetting it. Recall uses
the same one-matrix index as the long-term store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Final

import numpy as np

from orchestrator.agent.memory._embedder import Embedder
from orchestrator.agent.memory._index import VectorIndex
from orchestrator.agent.memory._records import (
    MemoryKind,
    MemoryRecord,
    MetadataValue,
    RecalledMemory,
    Vector,
)
from orchestrator.agent.memory._summary import Summariser

__all__ = ["ShortTermMemory"]

_KIND_CODES: Final = {kind: code for code, kind in enumerate(MemoryKind)}
# Every row of a short-term store belongs to its one scope.
_SCOPE: Final = 0


class ShortTermMemory:
    """A run's bounded, recent memory."""

    def __init__(
        self,
        *,
        scope: str,
        embedder: Embedder,
        summariser: Summariser,
        capacity: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """At most ``capacity`` memories (at least 2) of ``scope``."""
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self._scope = scope
        self._embedder = embedder
        self._summariser = summariser
        self._capacity = capacity
        self._clock = clock
        self._records: dict[int, MemoryRecord] = {}
        self._index = VectorIndex(embedder.dimension)
        self._next_id = 1
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def memories(self) -> list[MemoryRecord]:
        """Every memory held, oldest first."""
        return list(self._records.values())

    async def add(
        self,
        content: str,
        *,
        kind: MemoryKind = MemoryKind.NOTE,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> MemoryRecord:
        """Hold ``content``; summarise the oldest half first if the store is full."""
        async with self._lock:
            if len(self._records) >= self._capacity:
                await self._fold_oldest()
            (vector,) = await self._embedder.embed([content])
            return self._put(content, kind, dict(metadata or {}), vector)

    async def recall(self, query: Vector, *, k: int, threshold: float) -> list[RecalledMemory]:
        """The ``k`` memories most similar to the (normalised) ``query`` embedding."""
        rows, scores = self._index.search(query, k=k, threshold=threshold, scope=_SCOPE)
        ids = self._index.ids[rows]
        return [
            RecalledMemory(memory=self._records[int(i)], score=float(s), source="short_term")
            for i, s in zip(ids, scores, strict=True)
        ]

    def _put(
        self, content: str, kind: MemoryKind, metadata: dict[str, MetadataValue], vector: Vector
    ) -> MemoryRecord:
        record = MemoryRecord(
            id=self._next_id,
            scope=self._scope,
            kind=kind,
            content=content,
            key=content,
            created_at=self._clock(),
            metadata=metadata,
            embedding=np.asarray(vector, dtype=np.float32),
        )
        self._next_id += 1
        self._records[record.id] = record
        self._index.append([record.id], vector[None, :], scopes=_SCOPE, kinds=_KIND_CODES[kind])
        return record

    async def _fold_oldest(self) -> None:
        oldest = list(self._records.values())[: max(self._capacity // 2, 1)]
        text = await self._summariser(oldest)
        (vector,) = await self._embedder.embed([text])
        for record in oldest:
            del self._records[record.id]
        self._index.remove([record.id for record in oldest])
        folded = sum(_notes_in(record) for record in oldest)
        summary = self._put(text, MemoryKind.SUMMARY, {"notes": folded}, vector)
        # The summary stands where the notes it replaces stood: first.
        self._records = {summary.id: summary} | {
            key: value for key, value in self._records.items() if key != summary.id
        }


def _notes_in(record: MemoryRecord) -> int:
    """How many notes ``record`` stands for (a summary counts the notes it folded)."""
    notes = record.metadata.get("notes")
    return notes if record.kind is MemoryKind.SUMMARY and isinstance(notes, int) else 1

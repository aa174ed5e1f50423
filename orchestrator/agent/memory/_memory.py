"""The agent's memory: one long-term store and one embedder per process, one view per run.

The agent opens one :class:`Memory` (``await Memory.open(settings, state_dir=…)``)
and asks it for a :class:`RunMemory` per run. A run's view is bound to its
scope (the principal, or the configured namespace) and holds its short-term
notes; through it the loop recalls memories for the goal into the system
prompt, remembers the finished run, and stores lessons from failures.
Blocking work (SQLite, the matrix product, model inference) runs in worker
threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from orchestrator.agent.memory._embedder import Embedder
from orchestrator.agent.memory._long_term import LongTermMemory
from orchestrator.agent.memory._prompt import MemoryContext, memory_context
from orchestrator.agent.memory._records import (
    MemoryKind,
    MemoryRecord,
    MetadataValue,
    NewMemory,
    RecalledMemory,
    Vector,
)
from orchestrator.agent.memory._scope import memory_scope
from orchestrator.agent.memory._select import open_embedder
from orchestrator.agent.memory._short_term import ShortTermMemory
from orchestrator.agent.memory._summary import ExtractiveSummariser, Summariser
from orchestrator.config import MemorySettings, ModelSettings

__all__ = ["MEMORY_DATABASE", "Memory", "RunMemory"]

MEMORY_DATABASE = "memory.db"
"""The long-term store's file, in the state directory."""

_CONTENT_CHARS = 2000
_LESSON_CHARS = 600
_GOAL_CHARS = 500


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class Memory:
    """Long-term memory shared by a process's runs, and the embedder that indexes it."""

    def __init__(
        self,
        *,
        long_term: LongTermMemory,
        embedder: Embedder,
        settings: MemorySettings | None = None,
        summariser: Summariser | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire a memory from its parts (:meth:`open` builds them from the configuration)."""
        if long_term.index.dimension != embedder.dimension:
            raise ValueError(
                f"the store holds {long_term.index.dimension}-long vectors,"
                f" the embedder makes {embedder.dimension}-long ones"
            )
        self._long_term = long_term
        self._embedder = embedder
        self._settings = settings or MemorySettings()
        self._summariser = summariser or ExtractiveSummariser()
        self._clock = clock

    @classmethod
    async def open(
        cls,
        settings: MemorySettings,
        *,
        state_dir: Path,
        model: ModelSettings | None = None,
        embedder: Embedder | None = None,
        summariser: Summariser | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Memory:
        """Open ``memory.db`` in ``state_dir`` with the configured (or the given) embedder.

        ``model`` lends an ``openai`` embedder its server and key variable;
        ``summariser`` folds old short-term notes (default: extractive, no
        model). Raises :class:`~orchestrator.errors.InfrastructureError`
        when the store or the embedder cannot be opened.
        """
        if embedder is None:
            embedder = await open_embedder(settings.embedder, model=model)
        chosen = embedder
        long_term = await asyncio.to_thread(
            lambda: LongTermMemory(
                state_dir / MEMORY_DATABASE,
                embedder_name=chosen.name,
                dimension=chosen.dimension,
                max_per_scope=settings.max_memories,
                max_age_days=settings.max_age_days,
                clock=clock,
            )
        )
        return cls(
            long_term=long_term,
            embedder=chosen,
            settings=settings,
            summariser=summariser,
            clock=clock,
        )

    @property
    def settings(self) -> MemorySettings:
        """The memory's settings."""
        return self._settings

    @property
    def embedder(self) -> Embedder:
        """The embedder in use (the lexical one if MiniLM fell back)."""
        return self._embedder

    @property
    def long_term(self) -> LongTermMemory:
        """The long-term store."""
        return self._long_term

    @property
    def threshold(self) -> float:
        """The relevance threshold in force: the configured one, else the embedder's."""
        configured = self._settings.threshold
        return self._embedder.default_threshold if configured is None else configured

    def scope_for(self, principal: str) -> str:
        """The scope of ``principal``'s runs: the configured namespace, else their own."""
        return memory_scope(principal, namespace=self._settings.namespace)

    def for_run(self, *, principal: str, run_id: str) -> RunMemory:
        """A run's view: its scope and a fresh short-term store."""
        return RunMemory(self, scope=self.scope_for(principal), run_id=run_id)

    async def embed_one(self, text: str) -> Vector:
        """``text``'s embedding."""
        vector: Vector = (await self._embedder.embed([text]))[0]
        return vector

    async def search(
        self,
        query: Vector,
        *,
        scope: str,
        k: int | None = None,
        threshold: float | None = None,
        kinds: Sequence[MemoryKind] | None = None,
    ) -> list[RecalledMemory]:
        """Long-term memories of ``scope`` most similar to the ``query`` embedding."""
        return await asyncio.to_thread(
            self._long_term.search,
            query,
            scope=scope,
            k=self._settings.top_k if k is None else k,
            threshold=self.threshold if threshold is None else threshold,
            kinds=kinds,
        )

    async def recall(
        self,
        query: str,
        *,
        scope: str,
        k: int | None = None,
        threshold: float | None = None,
        kinds: Sequence[MemoryKind] | None = None,
    ) -> list[RecalledMemory]:
        """Long-term memories of ``scope`` relevant to ``query``, best first."""
        vector = await self.embed_one(query)
        return await self.search(vector, scope=scope, k=k, threshold=threshold, kinds=kinds)

    async def remember(
        self,
        content: str,
        *,
        scope: str,
        kind: MemoryKind,
        key: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> MemoryRecord:
        """Keep ``content`` in ``scope`` for later runs, embedded from ``key`` (default: itself)."""
        key = content if key is None else key
        vector = await self.embed_one(key)
        memory = NewMemory(
            scope=scope,
            kind=kind,
            content=content,
            key=key,
            created_at=self._clock(),
            metadata=dict(metadata or {}),
        )
        return await asyncio.to_thread(self._long_term.add, memory, vector)

    async def cleanup(self) -> int:
        """Delete memories past the configured age and count now; how many went."""
        return await asyncio.to_thread(self._long_term.cleanup)

    async def reembed(self, *, batch_size: int = 64) -> int:
        """Re-embed the memories another embedder made, so they are recalled again; how many."""
        done = 0
        while rows := await asyncio.to_thread(self._long_term.stale_rows, batch_size):
            vectors = await self._embedder.embed([key for _, key in rows])
            ids = [memory_id for memory_id, _ in rows]
            await asyncio.to_thread(self._long_term.replace_embeddings, ids, vectors)
            done += len(rows)
        return done

    async def close(self) -> None:
        """Close the store (and the embedder's connections, if it has any)."""
        await asyncio.to_thread(self._long_term.close)
        closer = getattr(self._embedder, "close", None)
        if closer is not None:
            await closer()

    def _short_term(self, scope: str) -> ShortTermMemory:
        return ShortTermMemory(
            scope=scope,
            embedder=self._embedder,
            summariser=self._summariser,
            capacity=self._settings.short_term_size,
            clock=self._clock,
        )


class RunMemory:
    """One run's memory: bound to the run's scope, with the run's own short-term notes."""

    def __init__(self, memory: Memory, *, scope: str, run_id: str) -> None:
        """Use :meth:`Memory.for_run`."""
        self._memory = memory
        self._scope = scope
        self._run_id = run_id
        self._short_term = memory._short_term(scope)

    @property
    def scope(self) -> str:
        """Whose memories this run sees and writes."""
        return self._scope

    @property
    def run_id(self) -> str:
        """The run."""
        return self._run_id

    @property
    def short_term(self) -> ShortTermMemory:
        """The run's recent notes."""
        return self._short_term

    async def recall(
        self,
        goal: str,
        *,
        k: int | None = None,
        threshold: float | None = None,
        kinds: Sequence[MemoryKind] | None = None,
    ) -> list[RecalledMemory]:
        """Memories relevant to ``goal``, long- and short-term together, best first."""
        memory = self._memory
        k = memory.settings.top_k if k is None else k
        threshold = memory.threshold if threshold is None else threshold
        vector = await memory.embed_one(goal)
        found = await memory.search(
            vector, scope=self._scope, k=k, threshold=threshold, kinds=kinds
        )
        if kinds is None or MemoryKind.NOTE in kinds or MemoryKind.SUMMARY in kinds:
            recent = await self._short_term.recall(vector, k=k, threshold=threshold)
            if kinds is not None:
                recent = [r for r in recent if r.memory.kind in kinds]
            found = sorted([*found, *recent], key=lambda r: -r.score)[:k]
        return found

    async def prompt_context(self, goal: str) -> MemoryContext:
        """What to add to the system prompt for ``goal``, and which memories that is."""
        recalled = await self.recall(goal)
        return memory_context(recalled, max_chars=self._memory.settings.max_prompt_chars)

    async def note(
        self, content: str, *, metadata: Mapping[str, MetadataValue] | None = None
    ) -> MemoryRecord:
        """Keep an observation for the rest of this run (short-term)."""
        return await self._short_term.add(content, metadata=metadata)

    async def remember_run(
        self,
        *,
        goal: str,
        success: bool,
        outcome: str,
        answer: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> MemoryRecord:
        """Keep the finished run for later runs with similar goals (recalled by its goal)."""
        status = "succeeded" if success else "failed"
        content = f"Goal: {_clip(goal, _GOAL_CHARS)}\nOutcome: {status}: {outcome.strip()}"
        if answer:
            content += f"\nAnswer: {answer.strip()}"
        facts = {**(metadata or {}), "run_id": self._run_id, "success": success}
        facts["goal"] = _clip(goal, _GOAL_CHARS)
        return await self._memory.remember(
            _clip(content, _CONTENT_CHARS),
            scope=self._scope,
            kind=MemoryKind.RUN,
            key=goal,
            metadata=facts,
        )

    async def store_lesson(
        self, *, goal: str, lesson: str, metadata: Mapping[str, MetadataValue] | None = None
    ) -> MemoryRecord:
        """Keep a short lesson tied to ``goal`` (Reflexion): recalled for similar goals later."""
        facts = {**(metadata or {}), "run_id": self._run_id, "goal": _clip(goal, _GOAL_CHARS)}
        return await self._memory.remember(
            _clip(lesson, _LESSON_CHARS),
            scope=self._scope,
            kind=MemoryKind.LESSON,
            key=goal,
            metadata=facts,
        )

    async def remember_fact(
        self, fact: str, *, metadata: Mapping[str, MetadataValue] | None = None
    ) -> MemoryRecord:
        """Keep a fact for later runs of this scope."""
        facts = {**(metadata or {}), "run_id": self._run_id}
        return await self._memory.remember(
            _clip(fact, _CONTENT_CHARS), scope=self._scope, kind=MemoryKind.FACT, metadata=facts
        )

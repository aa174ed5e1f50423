"""The embedder interface: texts in, L2-normalised float32 rows out.

Three implementations ship: :class:`~orchestrator.agent.memory.MiniLMEmbedder`
(all-MiniLM-L6-v2 on onnxruntime, the offline default),
:class:`~orchestrator.agent.memory.OpenAIEmbedder` (any OpenAI-compatible
``/embeddings`` endpoint) and :class:`~orchestrator.agent.memory.LexicalEmbedder`
(hashed words and character n-grams, the fallback that needs nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from orchestrator.agent.memory._records import Vectors

__all__ = ["Embedder"]


class Embedder(Protocol):
    """Turns texts into embeddings whose dot product is their cosine similarity."""

    @property
    def name(self) -> str:
        """Identifies the vectors: two embedders with one name make comparable vectors.

        Stored with every long-term memory; memories made by another embedder
        are not recalled (see :meth:`~orchestrator.agent.memory.Memory.reembed`).
        """
        ...

    @property
    def dimension(self) -> int:
        """Length of every embedding."""
        ...

    @property
    def default_threshold(self) -> float:
        """The cosine below which a memory is not relevant, for this embedder's vectors."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, ``(len(texts), dimension)`` float32, each row of unit length
        (an empty text may give a zero row)."""
        ...

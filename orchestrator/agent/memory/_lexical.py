"""The fallback embedder: hashed words and character trigrams, no model, no download.

Each text becomes a bag of features — its lower-cased words (three letters
or more, minus a few very common English words) and the character trigrams
of every word padded with a boundary mark (``<da``, ``dat``, ``ata``,
``ta>``) — hashed into a fixed number of buckets with a sign (the "hashing
trick"), weighted ``1 + log(count)`` and L2-normalised.

What it can do: texts that share words or word stems score high (``read a
CSV file`` ~ ``reading CSV files``), unrelated texts score low, and it is
fast (tens of µs per text) and the same in every process (CRC-32, not
Python's salted ``hash``). What it cannot: it knows no meaning, so a
paraphrase in other words (``car`` ~ ``automobile``) is not found, and texts
that share only common trigrams score a little above zero — hence its higher
default threshold. It is used when the MiniLM model is not installed.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from orchestrator.agent.memory._index import normalise_rows
from orchestrator.agent.memory._records import Vectors

__all__ = ["LexicalEmbedder"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "his",
        "how",
        "its",
        "may",
        "new",
        "now",
        "see",
        "who",
        "did",
        "get",
        "let",
        "say",
        "she",
        "too",
        "use",
        "with",
        "this",
        "that",
        "from",
        "have",
        "what",
        "when",
        "will",
        "your",
        "into",
        "than",
        "then",
        "them",
        "they",
        "were",
        "been",
        "also",
        "some",
        "such",
        "only",
        "over",
        "very",
    }
)
# Word features weigh more than any single trigram: a shared word is the
# stronger sign of a shared topic.
_WORD_WEIGHT = 2.0


class LexicalEmbedder:
    """Hashed bag of words and character trigrams (see the module docstring for its limits)."""

    def __init__(self, dimension: int = 384) -> None:
        """``dimension`` buckets (more: fewer collisions, a bigger matrix)."""
        if dimension < 16:
            raise ValueError(f"dimension must be at least 16, got {dimension}")
        self._dimension = dimension

    @property
    def name(self) -> str:
        """``lexical-v1:<dimension>``."""
        return f"lexical-v1:{self._dimension}"

    @property
    def dimension(self) -> int:
        """Number of hash buckets."""
        return self._dimension

    @property
    def default_threshold(self) -> float:
        """0.35: unrelated English texts share common trigrams and score up to ~0.25."""
        return 0.35

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """:meth:`embed`, on the calling thread (tens of µs per text)."""
        matrix = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self._features(text).items():
                digest = zlib.crc32(feature.encode("utf-8"))
                sign = 1.0 if digest & 0x8000_0000 else -1.0
                matrix[row, digest % self._dimension] += sign * weight
        return normalise_rows(matrix)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised row per text. Cheap enough to run on the event loop."""
        return self.embed_sync(texts)

    @staticmethod
    def _features(text: str) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for word in _WORD.findall(text.lower()):
            if len(word) >= 3 and word not in _STOPWORDS:
                counts["w:" + word] += 1
            padded = f"<{word}>"
            counts.update("c:" + padded[i : i + 3] for i in range(len(padded) - 2))
        return {
            feature: (1.0 + math.log(count)) * (_WORD_WEIGHT if feature[0] == "w" else 1.0)
            for feature, count in counts.items()
        }

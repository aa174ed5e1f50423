"""Recall over one matrix: every embedding a row of one float32 array, searched with one product.

A query's cosine similarity to every memory is one matrix-vector product
(rows and query are L2-normalised, so the dot product is the cosine: BLAS
``sgemv``, no Python loop over memories). Scope, kind and the relevance
threshold are boolean masks over that score vector; the top ``k`` of what
passes come from :func:`numpy.argpartition` (linear time), and only those
``k`` are sorted.

The matrix grows by doubling its capacity, so appending ``n`` rows one by
one copies O(n) rows in total. Removing rows compacts the arrays (cleanup is
rare; recall never pays for holes).

Cost, measured on a 2-core machine (``benchmarks/memory_bench.py``, figures
in ``docs/benchmarks.md``): the product reads the whole matrix, 100 000 x 384
x 4 bytes = 154 MB per query, so recall is bound by memory bandwidth, not
arithmetic: ~9.5 ms p50 on one BLAS thread (what a one-thread ``matrix.sum()``
costs), ~5 ms on OpenBLAS's two. The masks, the ``argpartition`` and the sort
of ``k`` rows add ~0.3 ms; the textbook loop (cosine per memory, then sort)
takes ~300 ms.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from orchestrator.agent.memory._records import Vector, Vectors

__all__ = ["VectorIndex", "normalise_rows"]

_INITIAL_CAPACITY = 64


def normalise_rows(vectors: npt.ArrayLike) -> Vectors:
    """``vectors`` as a 2-D float32 array whose non-zero rows have unit length."""
    matrix = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero vector (an empty text) stays zero: it is similar to nothing.
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


class VectorIndex:
    """Embeddings of one store in one matrix, with the id, scope and kind of each row.

    Not thread-safe: its store serialises access. Scopes and kinds are held as
    small integer codes so that filtering by them is one vectorised comparison.
    """

    def __init__(self, dimension: int) -> None:
        """An empty index of ``dimension``-long embeddings."""
        if dimension <= 0:
            raise ValueError(f"dimension must be positive, got {dimension}")
        self._dimension = dimension
        self._size = 0
        self._matrix: Vectors = np.empty((_INITIAL_CAPACITY, dimension), dtype=np.float32)
        self._ids: npt.NDArray[np.int64] = np.empty(_INITIAL_CAPACITY, dtype=np.int64)
        self._scopes: npt.NDArray[np.int32] = np.empty(_INITIAL_CAPACITY, dtype=np.int32)
        self._kinds: npt.NDArray[np.int8] = np.empty(_INITIAL_CAPACITY, dtype=np.int8)

    @property
    def dimension(self) -> int:
        """Length of every embedding."""
        return self._dimension

    def __len__(self) -> int:
        return self._size

    @property
    def ids(self) -> npt.NDArray[np.int64]:
        """The ids of the rows, in row order (a read-only view)."""
        view = self._ids[: self._size]
        view.flags.writeable = False
        return view

    def vector(self, row: int) -> Vector:
        """A copy of row ``row``'s embedding."""
        if not 0 <= row < self._size:
            raise IndexError(row)
        copy: Vector = self._matrix[row].copy()
        return copy

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` rows in all (a loader that knows its count calls this)."""
        if capacity <= len(self._ids):
            return
        size = self._size
        matrix = np.empty((capacity, self._dimension), dtype=np.float32)
        matrix[:size] = self._matrix[:size]
        self._matrix = matrix
        for name in ("_ids", "_scopes", "_kinds"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[:size] = old[:size]
            setattr(self, name, new)

    def append(
        self,
        ids: npt.ArrayLike,
        vectors: npt.ArrayLike,
        *,
        scopes: npt.ArrayLike,
        kinds: npt.ArrayLike,
    ) -> None:
        """Add rows: their ids, embeddings (normalised here) and scope and kind codes."""
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        count = len(new_ids)
        if count == 0:
            return
        matrix = normalise_rows(vectors)
        if matrix.shape != (count, self._dimension):
            raise ValueError(
                f"expected {count} embeddings of dimension {self._dimension}, got {matrix.shape}"
            )
        end = self._size + count
        if end > len(self._ids):
            self.reserve(max(end, 2 * len(self._ids)))
        self._matrix[self._size : end] = matrix
        self._ids[self._size : end] = new_ids
        self._scopes[self._size : end] = np.broadcast_to(np.asarray(scopes, np.int32), count)
        self._kinds[self._size : end] = np.broadcast_to(np.asarray(kinds, np.int8), count)
        self._size = end

    def retain(self, keep: npt.NDArray[np.bool_]) -> int:
        """Keep only the rows where ``keep`` is true (one mask over all rows); the count dropped."""
        size = self._size
        if keep.shape != (size,):
            raise ValueError(f"expected a mask of {size} rows, got shape {keep.shape}")
        kept = int(np.count_nonzero(keep))
        if kept == size:
            return 0
        for name in ("_matrix", "_ids", "_scopes", "_kinds"):
            array = getattr(self, name)
            array[:kept] = array[:size][keep]
        self._size = kept
        return size - kept

    def remove(self, ids: npt.ArrayLike) -> int:
        """Drop the rows with these ids; the count dropped."""
        gone = np.asarray(ids, dtype=np.int64).reshape(-1)
        if gone.size == 0 or self._size == 0:
            return 0
        return self.retain(~np.isin(self._ids[: self._size], gone))

    def search(
        self,
        query: Vector,
        *,
        k: int,
        threshold: float,
        scope: int,
        kinds: npt.NDArray[np.int8] | None = None,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The rows and scores of the ``k`` rows of ``scope`` most similar to ``query``.

        Rows index :attr:`ids` and :meth:`vector` until the index next changes.

        ``query`` must be L2-normalised. Only rows scoring at least
        ``threshold`` (cosine) and, when ``kinds`` is given, of one of those
        kind codes count. Best first; which of several equal scores make the cut is not defined.
        """
        size = self._size
        if size == 0 or k <= 0:
            return np.empty(0, np.intp), np.empty(0, np.float32)
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (self._dimension,):
            raise ValueError(f"expected a query of dimension {self._dimension}, got {query.shape}")
        # The one pass over the memories: (size, d) @ (d,), a BLAS sgemv.
        scores = self._matrix[:size] @ query
        passing = scores >= np.float32(threshold)
        passing &= self._scopes[:size] == scope
        if kinds is not None:
            passing &= np.isin(self._kinds[:size], kinds)
        count = int(np.count_nonzero(passing))
        if count > k and count > size // 4:
            # Most rows pass: select over the whole score vector with the others
            # pushed to -inf, skipping the gather of the passing rows (at 100 000
            # rows all passing: ~0.16 ms instead of ~0.3 ms, measured).
            masked = np.where(passing, scores, -np.inf)
            rows = np.argpartition(masked, size - k)[size - k :]
        else:
            rows = np.flatnonzero(passing)
            if rows.size > k:
                # Linear-time selection of the k best; only those k get sorted.
                rows = rows[np.argpartition(scores[rows], rows.size - k)[rows.size - k :]]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        return rows, scores[rows]

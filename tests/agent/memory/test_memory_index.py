"""The one-matrix index: results equal a brute-force search; scope, kind and threshold masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.agent.memory import VectorIndex, normalise_rows


def brute_force(
    matrix: np.ndarray, query: np.ndarray, scopes: np.ndarray, scope: int, k: int, threshold: float
) -> list[int]:
    """The textbook search: cosine per row, filter, sort."""
    scored = []
    for row, vector in enumerate(matrix):
        cosine = float(vector @ query) / float(np.linalg.norm(vector) * np.linalg.norm(query))
        if scopes[row] == scope and cosine >= threshold:
            scored.append((-cosine, row))
    return [row for _, row in sorted(scored)[:k]]


@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 300),
    k=st.integers(1, 12),
    threshold=st.sampled_from([-1.0, 0.0, 0.1, 0.3]),
)
def test_search_equals_brute_force(seed: int, size: int, k: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((size, 16)).astype(np.float32)
    scopes = rng.integers(0, 3, size)
    index = VectorIndex(16)
    # Appended in uneven chunks: growth keeps every row where it was.
    for start in range(0, size, 37):
        end = min(start + 37, size)
        index.append(
            np.arange(start, end) + 1000, matrix[start:end], scopes=scopes[start:end], kinds=0
        )
    query = normalise_rows(rng.standard_normal(16))[0]
    rows, scores = index.search(query, k=k, threshold=threshold, scope=1)
    expected = brute_force(normalise_rows(matrix), query, scopes, 1, k, threshold)
    # Equal scores may order differently by float rounding; compare the scores.
    assert np.allclose(scores, [normalise_rows(matrix)[r] @ query for r in expected], atol=1e-5)
    assert len(rows) == len(expected)
    assert list(index.ids[rows]) == [r + 1000 for r in rows]
    assert all(scopes[r] == 1 for r in rows)
    assert list(scores) == sorted(scores, reverse=True)


def test_ties_and_k_bounds() -> None:
    index = VectorIndex(4)
    same = np.tile([1.0, 0.0, 0.0, 0.0], (10, 1))
    index.append(np.arange(10), same, scopes=0, kinds=0)
    rows, scores = index.search(np.array([1, 0, 0, 0], np.float32), k=3, threshold=0.5, scope=0)
    assert len(set(index.ids[rows])) == 3
    assert np.allclose(scores, 1.0)
    assert index.search(np.array([1, 0, 0, 0], np.float32), k=0, threshold=0, scope=0)[0].size == 0


def test_threshold_kinds_and_unknown_scope() -> None:
    index = VectorIndex(2)
    index.append([1, 2, 3], [[1, 0], [1, 1], [0, 1]], scopes=[0, 0, 0], kinds=[0, 1, 1])
    query = np.array([1, 0], np.float32)
    rows, _ = index.search(query, k=5, threshold=0.5, scope=0)
    assert list(index.ids[rows]) == [1, 2]  # [0, 1] scores 0: below the threshold
    rows, _ = index.search(query, k=5, threshold=-1, scope=0, kinds=np.array([1], np.int8))
    assert list(index.ids[rows]) == [2, 3]
    assert index.search(query, k=5, threshold=-1, scope=7)[0].size == 0


def test_remove_compacts_and_growth_keeps_rows() -> None:
    rng = np.random.default_rng(1)
    vectors = normalise_rows(rng.standard_normal((500, 8)))
    index = VectorIndex(8)
    for i, vector in enumerate(vectors):  # one at a time: capacity doubles
        index.append([i], vector[None, :], scopes=0, kinds=0)
    assert len(index) == 500
    assert index.remove(np.arange(0, 500, 2)) == 250
    assert list(index.ids) == list(range(1, 500, 2))
    assert np.allclose(index.vector(0), vectors[1])
    rows, scores = index.search(vectors[7], k=1, threshold=0.99, scope=0)
    assert list(index.ids[rows]) == [7]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    rows, _ = index.search(vectors[8], k=1, threshold=0.99, scope=0)
    assert rows.size == 0  # removed


def test_shapes_are_checked() -> None:
    index = VectorIndex(3)
    with pytest.raises(ValueError, match="dimension 3"):
        index.append([1], [[1.0, 0.0]], scopes=0, kinds=0)
    index.append([1], [[1.0, 0.0, 0.0]], scopes=0, kinds=0)
    with pytest.raises(ValueError, match="query of dimension 3"):
        index.search(np.ones(2, np.float32), k=1, threshold=0, scope=0)
    assert np.array_equal(normalise_rows([[0.0, 0.0, 0.0]]), [[0.0, 0.0, 0.0]])

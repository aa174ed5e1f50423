"""Memory recall over 100 000 memories: one matrix-vector product beside the textbook loop.

Side by side, in one run, over the same ``--memories`` random unit vectors of
dimension ``--dimension`` (all in one scope: every memory is a candidate) and
the same queries (a stored vector plus noise, so each has true neighbours):

- ``VectorIndex.search``: one float32 matrix, one ``sgemv``, scope mask,
  threshold, ``argpartition`` for the top 5, sort of 5;
- ``LongTermMemory.search``: the same plus the check for other processes'
  writes (``PRAGMA data_version``) and reading the 5 winners' rows from SQLite;
- the textbook implementation: a Python loop computing the cosine of each
  stored vector (``dot / (norm * norm)``), then sorting all scores.

Both return the same top 5 (checked). Also: ``matrix.sum()`` over the same
matrix, the memory-bandwidth floor of any exact scan; insert throughput into
the SQLite store (batches of 1 000, and one memory per transaction); the
database's size on disk; reopening it (the matrix rebuilt from SQLite); a
cleanup pass with nothing to delete; and, with ``--embedders``, what embedding
one query costs (MiniLM, lexical).

The BLAS library and kernel that ran are printed (threadpoolctl), with
``OPENBLAS_CORETYPE`` if set.

Run: ``.venv/bin/python benchmarks/memory_bench.py [--memories 100000] [--embedders]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _bench import stop_on_sigterm

from orchestrator.agent.memory import (
    LexicalEmbedder,
    LongTermMemory,
    MemoryKind,
    NewMemory,
    VectorIndex,
    normalise_rows,
)

SCOPE = "principal:bench"
K = 5


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def timed(action: Callable[[int], Any], count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        action(i)
        samples.append(time.perf_counter() - started)
    return samples


def textbook_top_k(memories: list[np.ndarray], query: np.ndarray, k: int) -> list[int]:
    """Cosine per memory in a Python loop, then sort: the implementation recall replaces."""
    scored = []
    for i, vector in enumerate(memories):
        cosine = float(np.dot(vector, query) / (np.linalg.norm(vector) * np.linalg.norm(query)))
        scored.append((cosine, i))
    scored.sort(reverse=True)
    return [i for _, i in scored[:k]]


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - optional
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    parts = [
        f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')},"
        f" {i.get('num_threads')} threads"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    note = f"; OPENBLAS_CORETYPE={coretype}" if coretype else "; OPENBLAS_CORETYPE unset"
    return ("; ".join(parts) or "none found") + note


def one_blas_thread(action: Callable[[], list[float]]) -> list[float]:
    """``action`` with BLAS limited to one thread (or as it is, without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        return action()
    with threadpool_limits(limits=1, user_api="blas"):
        return action()


def content(i: int) -> str:
    return (
        f"Memory {i}: the run that built report {i % 997} succeeded after two retries;"
        f" the answer was {i * 7919 % 100003} rows."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--baseline-queries", type=int, default=5)
    parser.add_argument("--embedders", action="store_true", help="also time embedding a query")
    args = parser.parse_args()
    n, d = args.memories, args.dimension

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"BLAS: {blas()}")
    rng = np.random.default_rng(7)
    matrix = normalise_rows(rng.standard_normal((n, d), dtype=np.float32))
    picks = rng.integers(0, n, args.queries)
    queries = normalise_rows(matrix[picks] + 0.05 * rng.standard_normal((args.queries, d)))

    # -- recall ---------------------------------------------------------------
    index = VectorIndex(d)
    index.append(np.arange(1, n + 1), matrix, scopes=0, kinds=0)
    for query in queries[:10]:  # warm-up
        index.search(query, k=K, threshold=-1.0, scope=0)
    vectorised = timed(
        lambda i: index.search(queries[i], k=K, threshold=-1.0, scope=0), args.queries
    )
    vectorised_thr = timed(
        lambda i: index.search(queries[i], k=K, threshold=0.35, scope=0), args.queries
    )
    floor = timed(lambda _: matrix.sum(), min(args.queries, 100))
    one_thread = one_blas_thread(
        lambda: timed(
            lambda i: index.search(queries[i], k=K, threshold=-1.0, scope=0), args.queries
        )
    )

    as_list = list(matrix)  # the textbook store: one array per memory
    baseline: list[float] = []
    for i in range(args.baseline_queries):
        started = time.perf_counter()
        expected = textbook_top_k(as_list, queries[i], K)
        baseline.append(time.perf_counter() - started)
        rows, _ = index.search(queries[i], k=K, threshold=-1.0, scope=0)
        got = [int(r) for r in rows]
        assert got == expected, (got, expected)
    del as_list

    # -- the SQLite store -----------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        path = Path(tmp) / "memory.db"
        store = LongTermMemory(
            path,
            embedder_name="bench",
            dimension=d,
            max_per_scope=None,
            max_age_days=None,
            cleanup_every=10**9,
        )
        now = time.time()
        batch = 1000
        started = time.perf_counter()
        for start in range(0, n, batch):
            items = [
                NewMemory(
                    scope=SCOPE,
                    kind=MemoryKind.RUN,
                    content=content(i),
                    key=content(i),
                    created_at=now,
                    metadata={"run_id": f"run-{i}", "success": True},
                )
                for i in range(start, min(start + batch, n))
            ]
            store.add_many(items, matrix[start : start + len(items)])
        batched_s = time.perf_counter() - started
        singles = 2000
        started = time.perf_counter()
        for i in range(singles):
            store.add(
                NewMemory(
                    scope="principal:other",
                    kind=MemoryKind.FACT,
                    content=content(i),
                    key=content(i),
                    created_at=now,
                ),
                matrix[i],
            )
        single_s = time.perf_counter() - started
        store_search = timed(
            lambda i: store.search(queries[i], scope=SCOPE, k=K, threshold=-1.0), args.queries
        )
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        started = time.perf_counter()
        # With limits that delete nothing: opening runs one cleanup pass too.
        reopened = LongTermMemory(
            path, embedder_name="bench", dimension=d, max_per_scope=10**6, max_age_days=3650
        )
        reopen_s = time.perf_counter() - started
        assert len(reopened) == n + singles
        cleanup_s = timed(lambda _: reopened.cleanup(), 3)
        reopened.close()

    table = [
        ("VectorIndex.search, threshold -1 (all candidates)", percentiles(vectorised)),
        ("VectorIndex.search, threshold 0.35", percentiles(vectorised_thr)),
        ("LongTermMemory.search (+ change check, 5 rows read)", percentiles(store_search)),
        ("VectorIndex.search, threshold -1, BLAS on 1 thread", percentiles(one_thread)),
        ("matrix.sum() (bandwidth floor of an exact scan)", percentiles(floor)),
        (
            f"textbook per-memory loop + sort ({args.baseline_queries} queries)",
            percentiles(baseline),
        ),
    ]
    print(f"\nRecall, top {K} of {n:,} memories, dimension {d} ({args.queries} queries):")
    print(f"{'':58s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s}")
    for name, p in table:
        print(f"{name:58s} {p['p50']:9.2f} {p['p95']:9.2f} {p['p99']:9.2f}")
    speedup = statistics.median(baseline) / statistics.median(vectorised)
    print(f"speed-up of VectorIndex.search over the textbook loop (p50): {speedup:,.0f}x")
    print("\nInsert, SQLite store (WAL, synchronous=NORMAL), embeddings precomputed:")
    print(f"  batches of {batch}: {n / batched_s:,.0f} memories/s ({batched_s:.1f} s for {n:,})")
    print(f"  one per transaction: {singles / single_s:,.0f} memories/s")
    print(
        f"On disk: {size / 1e6:,.1f} MB for {n + singles:,} memories"
        f" ({size / (n + singles):,.0f} bytes each; the vector alone is {4 * d})"
    )
    print(f"Reopen (matrix rebuilt from SQLite, one cleanup pass): {reopen_s:.2f} s")
    print(
        f"Cleanup pass (age and count limits, nothing to delete):"
        f" {statistics.median(cleanup_s) * 1e3:.0f} ms"
    )

    if args.embedders:
        asyncio.run(embedders())


async def embedders() -> None:
    from orchestrator.agent.memory import MiniLMEmbedder  # noqa: PLC0415

    text = "Summarise the sales figures in report.xlsx and list the top five regions"
    started = time.perf_counter()
    minilm = MiniLMEmbedder()
    load_s = time.perf_counter() - started
    lexical = LexicalEmbedder()
    print(f"\nEmbedding one query (MiniLM loaded and verified in {load_s:.2f} s):")
    for name, embedder in (("MiniLM (onnxruntime, int8)", minilm), ("lexical", lexical)):
        await embedder.embed([text])
        samples = []
        for _ in range(50):
            started = time.perf_counter()
            await embedder.embed([text])
            samples.append(time.perf_counter() - started)
        p = percentiles(samples)
        print(f"  {name:28s} p50 {p['p50']:.2f} ms  p95 {p['p95']:.2f} ms")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

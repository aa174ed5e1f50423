"""Long-term memory: SQLite in the state directory, mirrored in one in-memory matrix.

The database is the truth; each process keeps a :class:`VectorIndex` of the
rows made by its embedder and searches that, then reads the few winning
rows' text from the database.

Staying consistent with other processes (every process of the host opens the
same file):

- Ids are ``INTEGER PRIMARY KEY AUTOINCREMENT``: strictly increasing, never
  reused. Writers are serialised by SQLite's write lock, so everything
  another process adds has an id above this process's high-water mark, and
  catching up is ``SELECT … WHERE id > mark`` — one indexed range read.
- Deletions (cleanup, in any process) bump ``meta.generation`` in the same
  transaction. A process that sees a generation it does not know drops from
  its matrix every row whose id is no longer in the table (one
  ``numpy.isin`` over the ids).
- Whether anything changed is asked of ``PRAGMA data_version``, which
  changes exactly when another connection has committed: a recall with no
  news costs one pragma (µs), not a query.
- Own writes catch up first, inside their ``BEGIN IMMEDIATE`` transaction
  (no other writer can commit in between), then append their rows; the
  data version is read before the commit, so the next check sees only
  other processes' commits.

A row whose embedder differs from this process's (another model, another
dimension) is not loaded: its vector is not comparable. :meth:`reembed`
re-embeds such rows from their stored ``key`` text.

Cleanup by age and by count (the newest ``max_per_scope`` of each scope
survive) runs when the store opens and after every ``cleanup_every`` writes.

Embeddings are stored as little-endian float32 blobs (4 bytes x dimension),
loaded into the matrix with one ``numpy.frombuffer`` over the joined blobs.
Durability: WAL, ``synchronous=NORMAL`` (a crash loses nothing committed; a
power cut may lose the last moments, acceptable for memories). Thread-safe
(one lock per store); callers on an event loop go through
:class:`~orchestrator.agent.memory.Memory`, which runs these calls in a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from orchestrator.agent.memory._index import VectorIndex, normalise_rows
from orchestrator.agent.memory._records import (
    MemoryKind,
    MemoryRecord,
    MetadataValue,
    NewMemory,
    RecalledMemory,
    Vector,
    Vectors,
)
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.private import private_file

__all__ = ["LongTermMemory"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    key TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    embedder TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_scope_created ON memories (scope, created_at);
CREATE INDEX IF NOT EXISTS memories_created ON memories (created_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('generation', 0), ('schema', 1);
"""
_INSERT = (
    "INSERT INTO memories (scope, kind, content, key, metadata, created_at, embedder, embedding)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "id, scope, kind, content, key, metadata, created_at"
_KIND_CODES: Final = {kind: code for code, kind in enumerate(MemoryKind)}
_DAY_S = 86_400.0
# Bound on the ids bound in one IN (...) (SQLite allows 32 766 variables).
_IDS_PER_QUERY = 10_000


def _blob(vector: Vector) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class LongTermMemory:
    """Memories of every scope in one SQLite file, recalled through one matrix."""

    def __init__(
        self,
        path: str | Path,
        *,
        embedder_name: str,
        dimension: int,
        max_per_scope: int | None = 10_000,
        max_age_days: float | None = 365.0,
        cleanup_every: int = 200,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
    ) -> None:
        """Open (creating if needed) the store at ``path`` and load this embedder's rows.

        Blocking (reads every row once): open it off the event loop.
        Raises :class:`~orchestrator.errors.InfrastructureError` when the file
        cannot be opened or read.
        """
        self._path = Path(path)
        self._embedder = embedder_name
        self._dimension = dimension
        self._max_per_scope = max_per_scope
        self._max_age_s = None if max_age_days is None else max_age_days * _DAY_S
        self._cleanup_every = cleanup_every
        self._clock = clock
        self._lock = threading.Lock()
        self._index = VectorIndex(dimension)
        self._scope_codes: dict[str, int] = {}
        self._mark = 0
        self._generation = 0
        self._data_version: int | None = None
        self._writes = 0
        try:
            private_file(self._path)
            self._db = sqlite3.connect(
                self._path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._failure("open", exc) from exc
        try:
            with self._guard("open"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                self._db.execute("PRAGMA synchronous=NORMAL")
            self.cleanup()
            self.refresh()
        except BaseException:
            self._db.close()
            raise

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def index(self) -> VectorIndex:
        """The in-memory matrix of this embedder's rows (read it under no other thread's write)."""
        return self._index

    def __len__(self) -> int:
        """Rows in this process's matrix (as of the last refresh)."""
        return len(self._index)

    # -- reading ----------------------------------------------------------------

    def refresh(self) -> None:
        """Catch up with what other processes added or deleted; cheap when nothing changed."""
        with self._guard("refresh"):
            version = self._version()
            if version == self._data_version:
                return
            self._db.execute("BEGIN")
            try:
                self._catch_up()
            finally:
                self._db.execute("COMMIT")
            # Read before catching up: a commit racing it is caught up next time.
            self._data_version = version

    def search(
        self,
        query: Vector,
        *,
        scope: str,
        k: int,
        threshold: float,
        kinds: Sequence[MemoryKind] | None = None,
    ) -> list[RecalledMemory]:
        """The ``k`` memories of ``scope`` most similar to ``query`` (normalised), best first."""
        self.refresh()
        with self._guard("search"):
            code = self._scope_codes.get(scope)
            if code is None:
                return []
            kind_codes = None if kinds is None else _kind_codes(kinds)
            found, scores = self._index.search(
                query, k=k, threshold=threshold, scope=code, kinds=kind_codes
            )
            if found.size == 0:
                return []
            ids = self._index.ids[found]
            rows = self._rows_by_id(ids.tolist())
            vectors = {int(i): self._index.vector(int(r)) for i, r in zip(ids, found, strict=True)}
        return [
            RecalledMemory(
                memory=_record(rows[int(i)], vectors[int(i)]), score=float(s), source="long_term"
            )
            for i, s in zip(ids, scores, strict=True)
            if int(i) in rows  # deleted by another process since the last refresh
        ]

    def get(self, memory_id: int) -> MemoryRecord | None:
        """The memory with this id, if it still exists."""
        with self._guard("get"):
            row = self._db.execute(
                f"SELECT {_COLUMNS}, embedding FROM memories WHERE id = ?",  # noqa: S608
                (memory_id,),
            ).fetchone()
        if row is None:
            return None
        return _record(row[:-1], np.frombuffer(row[-1], dtype="<f4").astype(np.float32))

    def count(self, scope: str | None = None) -> int:
        """Rows in the database (of every embedder), of ``scope`` if given."""
        with self._guard("count"):
            if scope is None:
                row = self._db.execute("SELECT count(*) FROM memories").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM memories WHERE scope = ?", (scope,)
                ).fetchone()
        return int(row[0])

    def stale_count(self) -> int:
        """Rows made by another embedder than this store's (not recalled until re-embedded)."""
        with self._guard("stale_count"):
            row = self._db.execute(
                "SELECT count(*) FROM memories WHERE embedder != ?", (self._embedder,)
            ).fetchone()
        return int(row[0])

    # -- writing ----------------------------------------------------------------

    def add(self, memory: NewMemory, embedding: Vector) -> MemoryRecord:
        """Store one memory with its embedding (normalised here)."""
        return self.add_many([memory], np.asarray(embedding)[None, :])[0]

    def add_many(self, memories: Sequence[NewMemory], embeddings: Vectors) -> list[MemoryRecord]:
        """Store memories in one transaction; their records, in order."""
        matrix = normalise_rows(embeddings) if len(memories) else np.zeros((0, self._dimension))
        if matrix.shape != (len(memories), self._dimension):
            raise ValueError(
                f"expected {len(memories)} embeddings of dimension {self._dimension},"
                f" got {matrix.shape}"
            )
        if not memories:
            return []
        params = [
            (
                m.scope,
                MemoryKind(m.kind).value,
                m.content,
                m.key,
                json.dumps(dict(m.metadata), ensure_ascii=False, allow_nan=False),
                m.created_at,
                self._embedder,
                _blob(vector),
            )
            for m, vector in zip(memories, matrix, strict=True)
        ]
        with self._guard("add"), self._write():
            first = self._sequence() + 1
            self._db.executemany(_INSERT, params)
            ids = np.arange(first, first + len(memories), dtype=np.int64)
            if self._sequence() != int(ids[-1]):  # AUTOINCREMENT under our write lock
                raise sqlite3.DatabaseError("memory ids were not assigned consecutively")
            self._append(ids, matrix, [m.scope for m in memories], [m.kind for m in memories])
            self._mark = int(ids[-1])
            self._writes += len(memories)
        if self._writes >= self._cleanup_every:
            self.cleanup()
        return [
            MemoryRecord(
                id=int(i),
                scope=m.scope,
                kind=MemoryKind(m.kind),
                content=m.content,
                key=m.key,
                created_at=m.created_at,
                metadata=dict(m.metadata),
                embedding=vector,
            )
            for i, m, vector in zip(ids, memories, matrix, strict=True)
        ]

    def cleanup(self) -> int:
        """Delete memories older than the age limit and beyond each scope's count; how many."""
        with self._guard("cleanup"), self._write():
            db = self._db
            gone: list[int] = []
            if self._max_age_s is not None:
                cutoff = self._clock() - self._max_age_s
                deleted = db.execute(
                    "DELETE FROM memories WHERE created_at < ? RETURNING id", (cutoff,)
                )
                gone += [row[0] for row in deleted]
            if self._max_per_scope is not None:
                # Counting walks the (scope, created_at) index only; the delete
                # runs for the scopes over their limit, usually none.
                over = db.execute(
                    "SELECT scope FROM memories GROUP BY scope HAVING count(*) > ?",
                    (self._max_per_scope,),
                ).fetchall()
                for (scope,) in over:
                    deleted = db.execute(
                        "DELETE FROM memories WHERE id IN (SELECT id FROM memories WHERE scope = ?"
                        " ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?) RETURNING id",
                        (scope, self._max_per_scope),
                    )
                    gone += [row[0] for row in deleted]
            if gone:
                self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'generation'")
                self._generation += 1
                self._index.remove(gone)
            self._writes = 0
        return len(gone)

    def stale_rows(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (id, key) of rows made by another embedder, oldest first."""
        with self._guard("stale_rows"):
            return [
                (int(row[0]), str(row[1]))
                for row in self._db.execute(
                    "SELECT id, key FROM memories WHERE embedder != ? ORDER BY id LIMIT ?",
                    (self._embedder, limit),
                )
            ]

    def replace_embeddings(self, ids: Sequence[int], embeddings: Vectors) -> int:
        """Give rows ``ids`` this store's embedder's vectors (re-embedding); rows updated.

        The rows keep their ids (below other processes' marks), so this counts
        as a deletion plus an addition for them: the generation is bumped and
        every process reloads what changed.
        """
        matrix = normalise_rows(embeddings)
        if matrix.shape != (len(ids), self._dimension):
            raise ValueError(f"expected {len(ids)} embeddings of dimension {self._dimension}")
        with self._guard("reembed"), self._write():
            cursor = self._db.executemany(
                "UPDATE memories SET embedder = ?, embedding = ? WHERE id = ?",
                [(self._embedder, _blob(v), int(i)) for i, v in zip(ids, matrix, strict=True)],
            )
            self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'generation'")
            self._catch_up()  # sees the new generation: loads the rows now of this embedder
        return cursor.rowcount

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- internals ---------------------------------------------------------------

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        """Hold the store's lock; turn SQLite's errors into ours."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise self._failure(op, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction that first catches up with other processes."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._catch_up()
            yield
            # No other writer can commit before ours: this is the version our
            # commit leaves us at.
            version = self._version()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._data_version = version

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _sequence(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'memories'").fetchone()
        return 0 if row is None else int(row[0])

    def _catch_up(self) -> None:
        """Inside a transaction: apply other processes' changes, then load rows past the mark."""
        db = self._db
        generation = int(
            db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()[0]
        )
        if generation != self._generation:
            # Rows below the mark were deleted or re-embedded: keep what is still
            # there with our embedder, load what newly is.
            live = np.fromiter(
                (
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM memories WHERE id <= ? AND embedder = ?",
                        (self._mark, self._embedder),
                    )
                ),
                dtype=np.int64,
            )
            self._index.retain(np.isin(self._index.ids, live))
            missing = np.setdiff1d(live, self._index.ids).tolist()
            for start in range(0, len(missing), _IDS_PER_QUERY):
                chunk = missing[start : start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                self._load(
                    f"SELECT id, scope, kind, embedding FROM memories WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                )
            self._generation = generation
        self._load(
            "SELECT id, scope, kind, embedding FROM memories"
            " WHERE id > ? AND embedder = ? ORDER BY id",
            (self._mark, self._embedder),
        )
        last = db.execute("SELECT max(id) FROM memories").fetchone()[0]
        self._mark = max(self._mark, int(last or 0))

    def _load(self, query: str, params: Sequence[Any]) -> None:
        """Append the rows (id, scope, kind, embedding) that ``query`` selects."""
        width = 4 * self._dimension
        # A blob of another length is not ours to compare: skipped.
        rows = [row for row in self._db.execute(query, params) if len(row[3]) == width]
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        blobs = b"".join(row[3] for row in rows)
        matrix = np.frombuffer(blobs, dtype="<f4").reshape(-1, self._dimension)
        self._index.reserve(len(self._index) + len(rows))
        self._append(ids, matrix, [row[1] for row in rows], [row[2] for row in rows])

    def _append(
        self,
        ids: npt.NDArray[np.int64],
        matrix: npt.ArrayLike,
        scopes: Sequence[str],
        kinds: Sequence[str],
    ) -> None:
        codes = self._scope_codes
        scope_codes = np.fromiter(
            (codes.setdefault(scope, len(codes)) for scope in scopes),
            dtype=np.int32,
            count=len(scopes),
        )
        kind_codes = np.fromiter(
            (_KIND_CODES[MemoryKind(kind)] for kind in kinds), dtype=np.int8, count=len(kinds)
        )
        self._index.append(ids, matrix, scopes=scope_codes, kinds=kind_codes)

    def _rows_by_id(self, ids: list[int]) -> dict[int, tuple[Any, ...]]:
        marks = ", ".join("?" * len(ids))
        query = f"SELECT {_COLUMNS} FROM memories WHERE id IN ({marks})"  # noqa: S608
        return {int(row[0]): tuple(row) for row in self._db.execute(query, ids)}

    def _failure(self, op: str, exc: BaseException) -> InfrastructureError:
        busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        # errors.py has no code of the memory store's own; a failing file makes
        # the store as unusable as a closed one (as for the limit store).
        return InfrastructureError(
            f"{self._path}: {exc}",
            code=ErrorCode.TIMEOUT if busy else ErrorCode.CLOSED,
            op=f"memory.{op}",
            retryable=busy,
        )


def _kind_codes(kinds: Sequence[MemoryKind]) -> npt.NDArray[np.int8]:
    return np.array([_KIND_CODES[MemoryKind(kind)] for kind in kinds], dtype=np.int8)


def _record(row: Sequence[Any], embedding: Vector) -> MemoryRecord:
    memory_id, scope, kind, content, key, metadata, created_at = row
    parsed: Mapping[str, MetadataValue] = json.loads(metadata)
    return MemoryRecord(
        id=int(memory_id),
        scope=str(scope),
        kind=MemoryKind(kind),
        content=str(content),
        key=str(key),
        created_at=float(created_at),
        metadata=parsed,
        embedding=embedding,
    )

"""Runs' state in SQLite: one transaction per step, append-only deltas, and leases.

``runs.db`` in the state directory holds, for every run:

- a ``runs`` row: the :class:`RunState` without its conversation (a few
  hundred bytes: iteration, calls in flight, budget used, memory references,
  worked time, deadline), rewritten at each checkpoint;
- ``messages`` rows: the conversation, one row per message, appended. A step
  adds only its new messages; only a summary or images dropped from the
  context (which rewrite older messages: ``RunState.rewrites`` counts them)
  rewrite the conversation;
- a ``leases`` row: which process drives the run, and until when. Only the
  holder may write a checkpoint: each checkpoint's transaction checks the
  lease first, so a process that lost its lease (expired, taken over) cannot
  write over the new holder's state, and learns it at its next step.

A lease is taken in one ``BEGIN IMMEDIATE`` transaction (SQLite serialises
writers, so of two processes asking at once one wins, the other is told who
holds it). It is free when nobody holds it, when its expiry has passed
(heartbeats renew it), or at once when its holder was a process of this host
and PID namespace that is gone (the owner label of
:mod:`orchestrator.sandbox.labels`: boot id and PID namespace, pid and start
time): a SIGKILLed orchestrator's runs are resumable at once.

Durability: WAL with ``synchronous=NORMAL``: a committed step survives the
process being killed (the commit is in the OS's page cache, written back by
the kernel), not a power cut; a checkpoint after every step costs no
``fsync``. The audit log, which decides whether a call may have run, is the
one that is ``fsync``-ed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.agent._run_state import STATE_VERSION, RunState
from orchestrator.errors import ErrorCode, InfrastructureError, UsageError
from orchestrator.private import private_file
from orchestrator.sandbox.labels import Owner, current_owner

__all__ = [
    "LOCK_WAIT_S",
    "RUNS_DB",
    "CheckpointFailed",
    "Delta",
    "LeaseHeld",
    "LeaseLost",
    "RunRow",
    "RunStore",
    "new_holder",
]

RUNS_DB = "runs.db"
"""The runs' database, in the state directory."""

LOCK_WAIT_S = 10.0
"""How long a write waits for another writer's lock on ``runs.db`` before it fails."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    goal TEXT NOT NULL,
    status TEXT NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    messages INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    owner TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (finished, started_at);
"""

# The conversation is kept in its own rows: the state row leaves it out.
_CONVERSATION = {"messages", "message_tokens"}


class LeaseHeld(UsageError):
    """Another live process drives the run."""


class LeaseLost(Exception):
    """This process no longer holds the run's lease: it must stop driving the run."""


class CheckpointFailed(InfrastructureError):
    """A step's checkpoint could not be committed (``runs.db`` locked past
    :data:`LOCK_WAIT_S`, disk full, the file damaged); nothing of that step was written."""

    def __init__(self, run_id: str, path: Path, error: sqlite3.Error) -> None:
        self.detail = f"{path}: {error}"
        super().__init__(
            f"the checkpoint of run {run_id} could not be committed to {self.detail}",
            code=ErrorCode.RUNS,
            op="runs.checkpoint",
            retryable=True,
        )


def new_holder() -> str:
    """A holder name for one driving of a run: this process's owner label and a random part."""
    return f"{current_owner().label()}#{uuid.uuid4().hex[:8]}"


def _owner_of(holder: str) -> Owner | None:
    return Owner.parse(holder.split("#", 1)[0])


@dataclass(frozen=True, kw_only=True)
class Delta:
    """One step's checkpoint: the state row, and the messages new since the last one."""

    run_id: str
    holder: str | None
    """The lease holder writing it (None: no lease is checked, for runs not leased)."""
    state: str
    """The state without its conversation, as JSON."""
    status: str
    finished: bool
    principal: str
    goal: str
    started_at: float
    start: int
    """Position of the first message in ``messages``; earlier rows are kept, later replaced."""
    messages: Sequence[tuple[str, int]]
    """New messages (JSON) and their token estimates, from ``start`` on."""
    total: int
    """Messages the conversation holds after this step."""


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """A run as the database lists it (no conversation read)."""

    run_id: str
    principal: str
    goal: str
    status: str
    finished: bool
    started_at: float
    updated_at: float
    state: dict[str, Any]
    holder: str | None
    lease_expires_at: float | None

    def lease_free(self, now: float) -> bool:
        """Whether a process may take the run's lease now."""
        return _free(self.holder, self.lease_expires_at, now)

    def held_elsewhere(self, now: float) -> bool:
        """Whether the lease is held, not yet expired, by a process this host cannot check
        (of another boot of this host, of another host, or in another PID namespace: another
        container): whether it still drives the run is known only when the lease expires
        (or is renewed)."""
        if self.holder is None or self.lease_free(now):
            return False
        owner = _owner_of(self.holder)
        return owner is None or owner.is_alive() is None


def _state_document(text: str) -> dict[str, Any]:
    """A row's state as JSON; ``{}`` for one that is damaged, so that one row cannot stop
    a listing of every run, or a server's resuming of the others (loading it says why)."""
    try:
        document = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _free(holder: str | None, expires_at: float | None, now: float) -> bool:
    if holder is None or expires_at is None or expires_at <= now:
        return True
    owner = _owner_of(holder)
    return owner is not None and owner.is_alive() is False


class RunStore:
    """The runs' database. Writes of checkpoints go through one connection per thread."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self._path = path
        self._clock = clock
        self._local = threading.local()
        private_file(path)
        with self._connect("runs.open") as db:
            db.executescript(_SCHEMA)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=LOCK_WAIT_S, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _connect(self, op: str) -> Iterator[sqlite3.Connection]:
        try:
            with closing(self._open()) as db:
                yield db
        except sqlite3.Error as exc:
            raise InfrastructureError(
                f"the runs database {self._path} failed: {exc}",
                code=ErrorCode.RUNS,
                op=op,
                retryable=True,
            ) from exc

    def _writer(self) -> sqlite3.Connection:
        """This thread's own connection (the agent's writer thread keeps one open)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._open()
        return db

    def close_thread_connection(self) -> None:
        """Close this thread's connections (the writer thread's, the event loop's)."""
        for name in ("db", "now"):
            db: sqlite3.Connection | None = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)

    # -- checkpoints ----------------------------------------------------------

    def write(self, delta: Delta) -> None:
        """Commit one step in one transaction; :class:`LeaseLost` if the lease is not held,
        :class:`CheckpointFailed` if the database could not take it."""
        try:
            db = self._writer()
            db.execute("BEGIN IMMEDIATE")
            self._commit(db, delta)
        except sqlite3.Error as exc:
            raise CheckpointFailed(delta.run_id, self._path, exc) from exc

    def write_if_free(self, delta: Delta) -> bool:
        """Commit one step now if the database's write lock is free; False (nothing written)
        when another writer holds it. :class:`LeaseLost` as :meth:`write`.

        For the event loop's thread: it never waits for a lock (busy timeout 0) and never
        ``fsync``-s (``synchronous=NORMAL`` commits to the WAL in the page cache, and this
        connection leaves WAL checkpoints, which do ``fsync``, to the writer thread's).
        """
        try:
            db: sqlite3.Connection | None = getattr(self._local, "now", None)
            if db is None:
                db = self._open()
                db.execute("PRAGMA busy_timeout=0")
                db.execute("PRAGMA wal_autocheckpoint=0")
                self._local.now = db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # locked by another writer
                return False
            self._commit(db, delta)
        except sqlite3.Error as exc:
            raise CheckpointFailed(delta.run_id, self._path, exc) from exc
        return True

    def _commit(self, db: sqlite3.Connection, delta: Delta) -> None:
        """The body of one step's transaction (begun), committed or rolled back."""
        try:
            if delta.holder is not None:
                row = db.execute(
                    "SELECT holder FROM leases WHERE run_id = ?", (delta.run_id,)
                ).fetchone()
                if row is None or row["holder"] != delta.holder:
                    raise LeaseLost(
                        f"run {delta.run_id}: the lease is held by "
                        f"{row['holder'] if row else 'nobody'}, not {delta.holder}"
                    )
            db.execute(
                "DELETE FROM messages WHERE run_id = ? AND position >= ?",
                (delta.run_id, delta.start),
            )
            db.executemany(
                "INSERT INTO messages (run_id, position, tokens, message) VALUES (?, ?, ?, ?)",
                [
                    (delta.run_id, delta.start + offset, tokens, message)
                    for offset, (message, tokens) in enumerate(delta.messages)
                ],
            )
            db.execute(
                "INSERT INTO runs (run_id, principal, goal, status, finished, started_at,"
                " updated_at, messages, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,"
                " finished = excluded.finished, started_at = excluded.started_at,"
                " updated_at = excluded.updated_at, messages = excluded.messages,"
                " state = excluded.state",
                (
                    delta.run_id, delta.principal, delta.goal, delta.status,
                    int(delta.finished), delta.started_at, self._clock(), delta.total,
                    delta.state,
                ),
            )  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk does): a ROLLBACK then
            # fails, and its error would hide the one that matters.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- reading ----------------------------------------------------------------

    def exists(self, run_id: str) -> bool:
        """Whether the run has a row."""
        with self._connect("runs.exists") as db:
            row = db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None

    def load(self, run_id: str) -> RunState | None:
        """The run's latest checkpoint, conversation included (None: no such run)."""
        with self._connect("runs.load") as db:
            db.execute("BEGIN")  # one snapshot of the row and its messages
            row = db.execute(
                "SELECT state, messages FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            messages = db.execute(
                "SELECT message, tokens FROM messages WHERE run_id = ? AND position < ?"
                " ORDER BY position",
                (run_id, row["messages"]),
            ).fetchall()
            db.execute("COMMIT")
        try:
            document = json.loads(row["state"])
            document["messages"] = [json.loads(m["message"]) for m in messages]
            document["message_tokens"] = [m["tokens"] for m in messages]
            if document.get("version", STATE_VERSION) > STATE_VERSION:
                raise ValueError(
                    f"format {document['version']} is newer than this Stockade's "
                    f"({STATE_VERSION}); run the version that wrote it"
                )
            return RunState.model_validate(document)
        except (ValueError, TypeError) as exc:  # ValidationError and JSONDecodeError included
            # A damaged row, or one a newer Stockade wrote: said so, never a traceback.
            raise InfrastructureError(
                f"the checkpoint of run {run_id} in {self._path} cannot be read: {exc}",
                code=ErrorCode.RUNS,
                op="runs.load",
                retryable=False,
            ) from exc

    def rows(self, *, unfinished_only: bool = False) -> list[RunRow]:
        """Every run's row (without its conversation), newest first."""
        query = (
            "SELECT r.run_id, r.principal, r.goal, r.status, r.finished, r.started_at,"
            " r.updated_at, r.state, l.holder, l.expires_at FROM runs r"
            " LEFT JOIN leases l ON l.run_id = r.run_id"
        )
        if unfinished_only:
            query += " WHERE r.finished = 0"
        with self._connect("runs.rows") as db:
            found = db.execute(query + " ORDER BY r.started_at DESC").fetchall()
        return [
            RunRow(
                run_id=row["run_id"],
                principal=row["principal"],
                goal=row["goal"],
                status=row["status"],
                finished=bool(row["finished"]),
                started_at=row["started_at"],
                updated_at=row["updated_at"],
                state=_state_document(row["state"]),
                holder=row["holder"],
                lease_expires_at=row["expires_at"],
            )
            for row in found
        ]

    def interrupted(self) -> list[RunRow]:
        """Unfinished runs nobody drives (their lease is free): the ones to resume."""
        now = self._clock()
        return [row for row in self.rows(unfinished_only=True) if row.lease_free(now)]

    def held_elsewhere(self) -> list[RunRow]:
        """Unfinished runs whose lease a process this host cannot check holds, not yet
        expired (see :meth:`RunRow.held_elsewhere`): the ones to resume at its expiry."""
        now = self._clock()
        return [row for row in self.rows(unfinished_only=True) if row.held_elsewhere(now)]

    # -- leases -------------------------------------------------------------------

    def acquire(self, run_id: str, holder: str, *, lease_s: float) -> None:
        """Take the run's lease for ``holder``; :class:`LeaseHeld` when a live process has it."""
        now = self._clock()
        with self._connect("runs.acquire") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT holder, expires_at FROM leases WHERE run_id = ?", (run_id,)
                ).fetchone()
                held = row is not None and row["holder"] != holder
                if held and not _free(row["holder"], row["expires_at"], now):
                    raise LeaseHeld(
                        f"run {run_id} is being driven by another process "
                        f"({row['holder'].split('#', 1)[0]}) whose lease runs until "
                        f"{time.strftime('%H:%M:%S', time.localtime(row['expires_at']))}"
                    )
                db.execute(
                    "INSERT INTO leases (run_id, holder, owner, heartbeat_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
                    " holder = excluded.holder, owner = excluded.owner,"
                    " heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at",
                    (run_id, holder, holder.split("#", 1)[0], now, now + lease_s),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def heartbeat(self, run_id: str, holder: str, *, lease_s: float) -> bool:
        """Extend the lease; False when ``holder`` no longer holds it."""
        now = self._clock()
        with self._connect("runs.heartbeat") as db:
            cursor = db.execute(
                "UPDATE leases SET heartbeat_at = ?, expires_at = ?"
                " WHERE run_id = ? AND holder = ?",
                (now, now + lease_s, run_id, holder),
            )
        return cursor.rowcount == 1

    def release(self, run_id: str, holder: str) -> None:
        """Give the lease up (the run ended, or its process stops driving it)."""
        with self._connect("runs.release") as db:
            db.execute("DELETE FROM leases WHERE run_id = ? AND holder = ?", (run_id, holder))

    def holder(self, run_id: str) -> str | None:
        """Who holds the run's lease now (whether or not it has expired)."""
        with self._connect("runs.holder") as db:
            row = db.execute("SELECT holder FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row["holder"])


def delta_of(
    state: RunState, *, holder: str | None, written: int, rewrites: int
) -> tuple[Delta, int, int]:
    """The checkpoint of ``state`` given what was written before (messages, rewrites).

    Returns the delta, and the new ``written`` and ``rewrites`` marks. Runs on
    the event loop: it serialises only the new messages and the small state.
    """
    start = written if state.rewrites == rewrites and written <= len(state.messages) else 0
    new = [
        (json.dumps(message, ensure_ascii=False, separators=(",", ":")), tokens)
        for message, tokens in zip(
            state.messages[start:], state.message_tokens[start:], strict=True
        )
    ]
    delta = Delta(
        run_id=state.run_id,
        holder=holder,
        state=state.model_dump_json(exclude=_CONVERSATION),
        status=state.status.value,
        finished=state.status.finished,
        principal=state.principal,
        goal=state.goal,
        started_at=state.started_at,
        start=start,
        messages=new,
        total=len(state.messages),
    )
    return delta, len(state.messages), state.rewrites

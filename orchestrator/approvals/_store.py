"""Durable approval requests in SQLite, safe for several processes at once.

Nothing lives in memory: every state change is one SQL statement, so a
request survives an orchestrator restart and whoever waits for it simply
reads the database again. A decision is a conditional ``UPDATE … WHERE
status = 'pending' AND expires_at > now``: when two approvers (threads or
processes) decide one request at the same time, SQLite runs the updates one
after the other, the second matches no row, and exactly one decision wins.

The database runs in WAL mode (readers never block the writer) with a busy
timeout, and every operation opens its own short-lived connection, so a
store object can be shared by threads and re-created freely.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from orchestrator.approvals._request import ApprovalRequest, ApprovalStatus
from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["ApprovalStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    rule TEXT,
    reason TEXT NOT NULL,
    principal TEXT,
    run_id TEXT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    edited_arguments TEXT,
    note TEXT,
    call_id TEXT
);
CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at);
"""
# A pending request past its deadline reads as expired, whether or not
# expire() has written that down yet: readers never need to write.
_SELECT = (
    "SELECT rowid AS position, id, tool, arguments, rule, reason, principal, run_id, call_id,"
    " created_at, expires_at, decided_by, decided_at, edited_arguments, note,"
    " CASE WHEN status = 'pending' AND expires_at <= :now THEN 'expired' ELSE status END"
    " AS status FROM approvals"
)
# Constant text; every value is a bound parameter.
_FIND = f"SELECT * FROM ({_SELECT}) WHERE :status IS NULL OR status = :status"  # noqa: S608
_PENDING = ApprovalStatus.PENDING.value


def _request(row: sqlite3.Row) -> ApprovalRequest:
    data = dict(row)
    del data["position"]  # insertion order, for sorting only
    data["arguments"] = json.loads(data["arguments"])
    if data["edited_arguments"] is not None:
        data["edited_arguments"] = json.loads(data["edited_arguments"])
    return ApprovalRequest.model_validate(data)


class ApprovalStore:
    """Approval requests in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        """Open (creating if needed) the database; ``clock`` returns Unix time."""
        self._path = Path(path)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect("approvals.open") as db:
            # WAL is a property of the file: set once, every later connection uses it.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(approvals)")}
            # Databases from earlier versions lack the newer columns.
            for column in ("note", "call_id"):
                if column not in columns:
                    db.execute(f"ALTER TABLE approvals ADD COLUMN {column} TEXT")
            db.execute(
                "CREATE INDEX IF NOT EXISTS approvals_by_call ON approvals (run_id, call_id)"
            )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @contextmanager
    def _connect(self, op: str) -> Iterator[sqlite3.Connection]:
        try:
            with closing(
                sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
            ) as db:
                db.row_factory = sqlite3.Row
                db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
                yield db
        except sqlite3.Error as exc:
            # Mostly "database is locked" after the busy timeout: worth another try.
            raise InfrastructureError(
                f"{self._path}: {exc}", code=ErrorCode.APPROVALS, op=op, retryable=True
            ) from exc

    def create(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        reason: str,
        timeout_s: float,
        rule: str | None = None,
        principal: str | None = None,
        run_id: str | None = None,
        call_id: str | None = None,
    ) -> ApprovalRequest:
        """Record a new pending request that can be decided for ``timeout_s`` seconds."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        now = self._clock()
        request = ApprovalRequest(
            id=secrets.token_hex(8),
            tool=tool,
            arguments=arguments,
            rule=rule,
            reason=reason,
            principal=principal,
            run_id=run_id,
            call_id=call_id,
            status=ApprovalStatus.PENDING,
            created_at=now,
            expires_at=now + timeout_s,
        )
        with self._connect("approvals.create") as db:
            db.execute(
                "INSERT INTO approvals (id, tool, arguments, rule, reason, principal, run_id,"
                " call_id, status, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.id, tool, json.dumps(arguments), rule, reason, principal, run_id,
                    call_id, _PENDING, now, request.expires_at,
                ),
            )  # fmt: skip
        return request

    def get(self, request_id: str) -> ApprovalRequest | None:
        """One request by id, or None."""
        with self._connect("approvals.get") as db:
            row = db.execute(
                f"{_SELECT} WHERE id = :id", {"now": self._clock(), "id": request_id}
            ).fetchone()
        return _request(row) if row else None

    def find_for_call(
        self, *, run_id: str, call_id: str, tool: str, arguments: dict[str, Any]
    ) -> ApprovalRequest | None:
        """The latest request made for exactly this call of this run, or None.

        After a restart the caller replays the call it was waiting on; finding
        its request again means a decision taken meanwhile applies to it, and
        no second request is made. The tool and arguments must match too, so
        an approval never carries over to a different call.
        """
        params = {"now": self._clock(), "run_id": run_id, "call_id": call_id}
        with self._connect("approvals.find_for_call") as db:
            rows = db.execute(
                f"{_SELECT} WHERE run_id = :run_id AND call_id = :call_id"
                " ORDER BY created_at DESC, position DESC",
                params,
            ).fetchall()
        for row in rows:
            request = _request(row)
            if request.tool == tool and request.arguments == arguments:
                return request
        return None

    def find(self, status: ApprovalStatus | None = ApprovalStatus.PENDING) -> list[ApprovalRequest]:
        """Requests in ``status`` (all when None), oldest first. The default lists pending ones."""
        params = {"now": self._clock(), "status": None if status is None else status.value}
        with self._connect("approvals.find") as db:
            rows = db.execute(f"{_FIND} ORDER BY created_at, position", params).fetchall()
        return [_request(row) for row in rows]

    def decide(
        self,
        request_id: str,
        *,
        approve: bool,
        by: str,
        arguments: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> bool:
        """Approve (optionally replacing the arguments) or deny a pending request.

        Returns True when this decision was recorded; False when the request
        is unknown, already decided (by someone faster) or expired.
        """
        if arguments is not None and not approve:
            raise ValueError("edited arguments only make sense when approving")
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        now = self._clock()
        edited = json.dumps(arguments) if arguments is not None else None
        with self._connect("approvals.decide") as db:
            cursor = db.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?,"
                " edited_arguments = ?, note = ? WHERE id = ? AND status = ? AND expires_at > ?",
                (status.value, by, now, edited, note, request_id, _PENDING, now),
            )
            return cursor.rowcount == 1

    def expire(self, request_id: str | None = None) -> int:
        """Write down that pending requests past their deadline (or just one) expired; how many."""
        query = "UPDATE approvals SET status = 'expired' WHERE status = ? AND expires_at <= ?"
        params: tuple[Any, ...] = (_PENDING, self._clock())
        if request_id is not None:
            query, params = f"{query} AND id = ?", (*params, request_id)
        with self._connect("approvals.expire") as db:
            return db.execute(query, params).rowcount

    async def wait_for_decision(
        self, request_id: str, *, timeout_s: float | None = None, poll_s: float = 0.25
    ) -> ApprovalRequest:
        """Wait until the request is decided or expires, and return it.

        State lives only in the database, so this works for a request created
        by another process or before a restart. At the request's deadline it is
        marked expired (nobody can decide it afterwards) and returned. A
        ``timeout_s`` shorter than that bounds this wait only: ``TimeoutError``
        is raised and the request stays pending for a later waiter. Raises
        ``KeyError`` for an unknown id.
        """
        loop = asyncio.get_running_loop()
        give_up = None if timeout_s is None else loop.time() + timeout_s
        while True:
            request = await asyncio.to_thread(self.get, request_id)
            if request is None:
                raise KeyError(request_id)
            if request.status is ApprovalStatus.EXPIRED:
                await asyncio.to_thread(self.expire, request_id)
            if request.status is not ApprovalStatus.PENDING:
                return request
            pause = min(poll_s, max(0.0, request.expires_at - self._clock()))
            if give_up is not None:
                left = give_up - loop.time()
                if left <= 0:
                    raise TimeoutError(f"approval request {request_id} is still pending")
                pause = min(pause, left)
            await asyncio.sleep(pause)

"""Durable approval requests in SQLite, safe for several processes at once.

Every state change is one statement; a decision is a conditional UPDATE on a
request that is still pending and not yet expired, so when two approvers
decide the same request at the same time exactly one of them wins. Nothing
lives in memory: a request survives an orchestrator restart, and whoever
waits for it simply reads the database again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ApprovalRequest", "ApprovalStatus", "ApprovalStore"]

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
    edited_arguments TEXT
)
"""


class ApprovalStatus(StrEnum):
    """Where a request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class ApprovalRequest(BaseModel):
    """A call waiting for (or past) a human's decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Request id."""
    tool: str
    """The tool the call asks for."""
    arguments: dict[str, Any]
    """The arguments as the model sent them (already validated)."""
    rule: str | None
    """The policy rule that asked for approval."""
    reason: str
    """Why approval is needed."""
    principal: str | None
    """Who the run acts for."""
    run_id: str | None
    """The run the call belongs to."""
    status: ApprovalStatus
    """Pending, approved, denied or expired."""
    created_at: float
    """Unix time of the request."""
    expires_at: float
    """Unix time after which the request can no longer be decided."""
    decided_by: str | None = None
    """Who decided."""
    decided_at: float | None = None
    """When."""
    edited_arguments: dict[str, Any] | None = None
    """Arguments the approver replaced the original ones with."""


def _row(row: sqlite3.Row) -> ApprovalRequest:
    data = dict(row)
    data["arguments"] = json.loads(data["arguments"])
    if data["edited_arguments"] is not None:
        data["edited_arguments"] = json.loads(data["edited_arguments"])
    return ApprovalRequest.model_validate(data)


class ApprovalStore:
    """Approval requests in one SQLite file."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per operation: safe across threads and
        # processes; WAL lets readers go on while one process writes.
        with closing(sqlite3.connect(self._path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db

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
    ) -> ApprovalRequest:
        """Record a new pending request."""
        now = self._clock()
        request_id = uuid.uuid4().hex[:12]
        with self._connect() as db:
            db.execute(
                "INSERT INTO approvals (id, tool, arguments, rule, reason, principal, run_id,"
                " status, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request_id, tool, json.dumps(arguments), rule, reason, principal, run_id,
                    ApprovalStatus.PENDING.value, now, now + timeout_s,
                ),
            )  # fmt: skip
        found = self.get(request_id)
        assert found is not None
        return found

    def get(self, request_id: str) -> ApprovalRequest | None:
        """A request by id (expired ones are reported as such)."""
        self.expire()
        with self._connect() as db:
            row = db.execute("SELECT * FROM approvals WHERE id = ?", (request_id,)).fetchone()
        return _row(row) if row else None

    def find(self, status: ApprovalStatus | None = ApprovalStatus.PENDING) -> list[ApprovalRequest]:
        """Requests, oldest first; all of them when ``status`` is None."""
        self.expire()
        query = "SELECT * FROM approvals"
        params: tuple[str, ...] = ()
        if status is not None:
            query, params = f"{query} WHERE status = ?", (status.value,)
        with self._connect() as db:
            rows = db.execute(f"{query} ORDER BY created_at", params).fetchall()
        return [_row(row) for row in rows]

    def decide(
        self,
        request_id: str,
        *,
        approve: bool,
        by: str,
        arguments: dict[str, Any] | None = None,
    ) -> bool:
        """Approve (optionally with edited arguments) or deny; False if someone else was first
        or the request has expired."""
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        now = self._clock()
        edited = json.dumps(arguments) if arguments is not None and approve else None
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?,"
                " edited_arguments = ? WHERE id = ? AND status = ? AND expires_at > ?",
                (status.value, by, now, edited, request_id, ApprovalStatus.PENDING.value, now),
            )
            return cursor.rowcount == 1

    def expire(self) -> int:
        """Mark pending requests past their time as expired; how many."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE approvals SET status = ? WHERE status = ? AND expires_at <= ?",
                (ApprovalStatus.EXPIRED.value, ApprovalStatus.PENDING.value, self._clock()),
            )
            return cursor.rowcount

    async def wait(self, request_id: str, *, poll_s: float = 0.25) -> ApprovalRequest:
        """Wait until the request is decided or expires (state lives only in the database)."""
        while True:
            request = await asyncio.to_thread(self.get, request_id)
            if request is None:
                raise KeyError(request_id)
            if request.status is not ApprovalStatus.PENDING:
                return request
            await asyncio.sleep(min(poll_s, max(0.0, request.expires_at - self._clock())))

"""Durable approval requests in SQLite, safe for several processes at once.

Nothing lives in memory: every state change is one SQL statement, so a
request survives an orchestrator restart and whoever waits for it simply
reads the database again. A decision is a conditional ``UPDATE … WHERE
status = 'pending' AND expires_at > now``: when two approvers (threads or
processes) decide one request at the same time, SQLite runs the updates one
after the other, the second matches no row, and exactly one decision wins.

A decision authorises one execution. The call that acts on it (runs, or is
refused) consumes it with the same kind of conditional ``UPDATE … WHERE
consumed_at IS NULL``, so when two processes replay one call, one consumes
the decision and the other must ask again; a consumed request is never found
again. Only an approver's explicit choice of a wider :class:`ApprovalScope`
(the rest of the run) makes a standing grant, which later calls use without
consuming it.

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

from orchestrator.approvals._request import ApprovalRequest, ApprovalScope, ApprovalStatus
from orchestrator.errors import ErrorCode, InfrastructureError, NotFoundError, UsageError
from orchestrator.private import private_file

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
    call_id TEXT,
    scope TEXT NOT NULL DEFAULT 'once',
    consumed_by TEXT,
    consumed_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at);
"""
# Columns newer than the first version, added to older databases on open.
_ADDED_COLUMNS = {
    "note": "TEXT",
    "call_id": "TEXT",
    "scope": "TEXT NOT NULL DEFAULT 'once'",
    "consumed_by": "TEXT",
    "consumed_at": "REAL",
}
# A pending request past its deadline reads as expired, whether or not
# expire() has written that down yet: readers never need to write.
_SELECT = (
    "SELECT rowid AS position, id, tool, arguments, rule, reason, principal, run_id, call_id,"
    " created_at, expires_at, decided_by, decided_at, edited_arguments, note,"
    " scope, consumed_by, consumed_at,"
    " CASE WHEN status = 'pending' AND expires_at <= :now THEN 'expired' ELSE status END"
    " AS status FROM approvals"
)
# Constant text; every value is a bound parameter. Each filter is on the stored status,
# so the status index finds the rows: a filter on the status computed above read every
# request ever made (~60 ms for 200 000, each second for each open approval page).
_FIND: dict[ApprovalStatus | None, str] = {
    None: _SELECT,
    ApprovalStatus.PENDING: f"{_SELECT} WHERE approvals.status = 'pending' AND expires_at > :now",
    ApprovalStatus.EXPIRED: f"{_SELECT} WHERE approvals.status = 'expired'"
    " UNION ALL "
    f"{_SELECT} WHERE approvals.status = 'pending' AND expires_at <= :now",
    ApprovalStatus.APPROVED: f"{_SELECT} WHERE approvals.status = 'approved'",
    ApprovalStatus.DENIED: f"{_SELECT} WHERE approvals.status = 'denied'",
}
_PENDING = ApprovalStatus.PENDING.value
_ONCE = ApprovalScope.ONCE.value


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
        private_file(self._path)  # requests hold calls' arguments
        with self._connect("approvals.open") as db:
            # WAL is a property of the file: set once, every later connection uses it.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            # One writer at a time, so two processes opening an old database
            # do not both add the same column.
            db.execute("BEGIN IMMEDIATE")
            try:
                self._upgrade(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _upgrade(db: sqlite3.Connection) -> None:
        """Bring a database from an earlier version up to date (inside a write transaction)."""
        columns = {row["name"] for row in db.execute("PRAGMA table_info(approvals)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in columns:
                db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {kind}")
        if "consumed_at" not in columns:
            # Decisions from before single use may already have authorised a
            # call, and nothing says which: none may authorise another.
            db.execute(
                "UPDATE approvals SET consumed_at = COALESCE(decided_at, created_at)"
                " WHERE status != ?",
                (_PENDING,),
            )
        db.execute("CREATE INDEX IF NOT EXISTS approvals_by_call ON approvals (run_id, call_id)")

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
            raise UsageError(f"timeout_s must be positive, got {timeout_s}")
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
        """The latest unconsumed single-use request made for exactly this call of this run.

        After a restart the caller replays the call it was waiting on; finding
        its request again means a decision taken meanwhile applies to it, and
        no second request is made. The tool and arguments must match too, so
        an approval never carries over to a different call; and a request an
        execution has consumed is never found, so an identical later call
        (even one reusing the call id) asks again.
        """
        params = {"now": self._clock(), "run_id": run_id, "call_id": call_id, "once": _ONCE}
        with self._connect("approvals.find_for_call") as db:
            rows = db.execute(
                f"{_SELECT} WHERE run_id = :run_id AND call_id = :call_id"
                " AND consumed_at IS NULL AND scope = :once"
                " ORDER BY created_at DESC, position DESC",
                params,
            ).fetchall()
        for row in rows:
            request = _request(row)
            if request.tool == tool and request.arguments == arguments:
                return request
        return None

    def find_grant(
        self,
        *,
        run_id: str,
        tool: str,
        rule: str | None,
        principal: str | None,
        arguments: dict[str, Any],
    ) -> ApprovalRequest | None:
        """The latest standing grant of this run that covers a call, or None.

        A grant covers later calls of the same run and principal to the same
        tool that the same policy rule sends for approval: all of them for
        :attr:`ApprovalScope.RUN`, those with identical arguments for
        :attr:`ApprovalScope.RUN_IDENTICAL`.
        """
        params = {
            "now": self._clock(), "run_id": run_id, "tool": tool, "rule": rule,
            "principal": principal, "approved": ApprovalStatus.APPROVED.value, "once": _ONCE,
        }  # fmt: skip
        with self._connect("approvals.find_grant") as db:
            rows = db.execute(
                f"{_SELECT} WHERE run_id = :run_id AND tool = :tool AND rule IS :rule"
                " AND principal IS :principal AND approvals.status = :approved"
                " AND scope != :once ORDER BY decided_at DESC, position DESC",
                params,
            ).fetchall()
        for row in rows:
            grant = _request(row)
            if grant.scope is ApprovalScope.RUN or grant.arguments == arguments:
                return grant
        return None

    def find(self, status: ApprovalStatus | None = ApprovalStatus.PENDING) -> list[ApprovalRequest]:
        """Requests in ``status`` (all when None), oldest first. The default lists pending ones."""
        with self._connect("approvals.find") as db:
            rows = db.execute(
                f"{_FIND[status]} ORDER BY created_at, position", {"now": self._clock()}
            ).fetchall()
        return [_request(row) for row in rows]

    def newest(
        self, status: ApprovalStatus | None, limit: int
    ) -> tuple[list[ApprovalRequest], bool]:
        """The newest ``limit`` requests in ``status`` (all when None), oldest first, and
        whether older ones were left out: nothing deletes decided requests, so "all" grows
        for as long as the store lives."""
        params = {"now": self._clock(), "limit": max(0, limit) + 1}  # one more: are there more?
        with self._connect("approvals.newest") as db:
            rows = db.execute(
                f"{_FIND[status]} ORDER BY created_at DESC, position DESC LIMIT :limit", params
            ).fetchall()
        more = len(rows) > limit
        return [_request(row) for row in reversed(rows[:limit])], more

    def decide(
        self,
        request_id: str,
        *,
        approve: bool,
        by: str,
        arguments: dict[str, Any] | None = None,
        note: str | None = None,
        scope: ApprovalScope = ApprovalScope.ONCE,
    ) -> bool:
        """Approve (optionally replacing the arguments) or deny a pending request.

        An approval authorises the one execution that consumes it, unless the
        approver explicitly chooses a wider ``scope``: a standing grant for
        the rest of the request's run, recorded as such. A grant keeps the
        model's arguments (an edit is a judgement about one call) and needs a
        run to be bounded by. Returns True when this decision was recorded;
        False when the request is unknown, already decided (by someone
        faster) or expired.
        """
        if arguments is not None and not approve:
            raise UsageError("edited arguments only make sense when approving")
        if arguments is not None and not isinstance(arguments, dict):
            # Stored as given, it would make every later read of the request fail.
            raise UsageError(
                "edited arguments must be a JSON object of argument names and values, got "
                f"{json.dumps(arguments, default=repr)[:100]}"
            )
        if scope is not ApprovalScope.ONCE:
            if not approve:
                raise UsageError("only an approval can cover more than one call")
            if arguments is not None:
                raise UsageError("a grant for the run cannot edit the arguments")
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        now = self._clock()
        try:
            # NaN or Infinity is no JSON: the call's audit record could not be written.
            edited = json.dumps(arguments, allow_nan=False) if arguments is not None else None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"edited arguments are not JSON: {exc}") from None
        with self._connect("approvals.decide") as db:
            # A grant is bounded by its run: a request outside any run can only be approved once.
            cursor = db.execute(
                "UPDATE approvals SET status = :status, decided_by = :by, decided_at = :now,"
                " edited_arguments = :edited, note = :note, scope = :scope"
                " WHERE id = :id AND status = :pending AND expires_at > :now"
                " AND (:scope = :once OR run_id IS NOT NULL)",
                {
                    "status": status.value, "by": by, "now": now, "edited": edited, "note": note,
                    "scope": scope.value, "id": request_id, "pending": _PENDING, "once": _ONCE,
                },
            )  # fmt: skip
            if cursor.rowcount == 1:
                return True
            if scope is not ApprovalScope.ONCE:
                row = db.execute(
                    "SELECT 1 FROM approvals WHERE id = ? AND status = ? AND expires_at > ?"
                    " AND run_id IS NULL",
                    (request_id, _PENDING, now),
                ).fetchone()
                if row is not None:
                    raise UsageError(
                        f"request {request_id} belongs to no run, so it cannot be granted"
                        f" for the run (scope {scope.value!r}); approve it once"
                    )
            return False

    def consume(self, request_id: str, *, call_id: str) -> ApprovalRequest | None:
        """Use up a decided request for the execution of call ``call_id``; the request, or None.

        The call that acts on a decision (runs on an approval, or is refused by
        a denial or an expiry) consumes it, so it authorises nothing else.
        When two executions race for one decision, exactly one consumes it;
        the other gets None and must ask again. A standing grant is returned
        as it is, never consumed: it covers every call of its scope. None
        also for an unknown, still pending or already consumed request.
        """
        now = self._clock()
        with self._connect("approvals.consume") as db:
            # A pending request past its deadline has expired, and the call
            # that saw it expire uses that up like any decision.
            consumed = db.execute(
                "UPDATE approvals SET consumed_by = :call_id, consumed_at = :now,"
                " status = CASE WHEN status = :pending THEN :expired ELSE status END"
                " WHERE id = :id AND consumed_at IS NULL AND scope = :once"
                " AND (status != :pending OR expires_at <= :now)",
                {
                    "call_id": call_id, "now": now, "id": request_id, "once": _ONCE,
                    "pending": _PENDING, "expired": ApprovalStatus.EXPIRED.value,
                },
            ).rowcount  # fmt: skip
            row = db.execute(f"{_SELECT} WHERE id = :id", {"now": now, "id": request_id}).fetchone()
        if row is None:
            return None
        request = _request(row)
        return request if consumed == 1 or request.is_grant else None

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
                raise NotFoundError(f"no approval request {request_id}")
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

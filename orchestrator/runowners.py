"""Which principal a run id belongs to, so one principal never reaches another's workspace.

A run's workspace (and its standing approval grants) are found by run id
alone, and through the API the client chooses the run id. The first
principal to use a run id owns it, durably (a table in the server's
database, so a restart hands nobody a run); any other principal is refused.
Ownership never changes, so what this process has seen is kept in memory and
only a run id it has not seen yet costs a database round trip, off the event loop.

Every entrance that lets its user name a run reads the same table: the HTTP
API and MCP server, and the command line (``stockade run --run-id``,
``stockade tools call --run-id``), which is why it lives outside
``orchestrator.server`` (importing that package costs a command a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.private import private_file

__all__ = ["RunOwners"]

# Run ids remembered in memory; past this the oldest are forgotten (and read again if used).
_REMEMBERED = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_owners (
    run_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    claimed_at REAL NOT NULL
);
"""


class RunOwners:
    """Run ids and their owners, in the server's database."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 10.0,
    ) -> None:
        """Open the database (the token store's file; the table is created if missing).

        A database made here is private (0600), as the token store makes it: the
        command line may be first to open it, before any server has run.
        """
        self._path = Path(path)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._owners: dict[str, str] = {}
        try:
            private_file(self._path)
        except OSError as exc:
            raise InfrastructureError(
                f"{self._path}: {exc}", code=ErrorCode.TOKENS, op="run_owners.open", retryable=False
            ) from exc
        with self._connect("run_owners.open") as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self, op: str) -> Iterator[sqlite3.Connection]:
        try:
            with contextlib.closing(
                sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
            ) as db:
                yield db
        except sqlite3.Error as exc:
            raise InfrastructureError(
                f"{self._path}: {exc}", code=ErrorCode.TOKENS, op=op, retryable=True
            ) from exc

    def _claim(self, run_id: str, principal: str) -> str:
        with self._connect("run_owners.claim") as db:
            db.execute(
                "INSERT OR IGNORE INTO run_owners (run_id, principal, claimed_at) VALUES (?, ?, ?)",
                (run_id, principal, self._clock()),
            )
            row = db.execute(
                "SELECT principal FROM run_owners WHERE run_id = ?", (run_id,)
            ).fetchone()
        owner: str = row[0]
        return owner

    async def claim(
        self,
        run_id: str,
        principal: str,
        *,
        recorded: Callable[[], Awaitable[str | None]] | None = None,
    ) -> bool:
        """Whether ``principal`` may use ``run_id``: it owns it, or it is new and now its own.

        ``recorded``, asked before a claim this process has not seen, names the
        principal the run's own files record, if any: a run ``stockade run`` made
        on the same state directory was never claimed here, and is not another
        principal's to take.
        """
        owner = self._owners.get(run_id)
        if owner is None:
            if recorded is not None and await recorded() not in (None, principal):
                return False
            owner = await asyncio.to_thread(self._claim, run_id, principal)
            if len(self._owners) >= _REMEMBERED:
                del self._owners[next(iter(self._owners))]
            self._owners[run_id] = owner
        return owner == principal

    def owner(self, run_id: str) -> str | None:
        """The principal owning ``run_id``, or None when nobody has used it through the API."""
        with self._connect("run_owners.owner") as db:
            row = db.execute(
                "SELECT principal FROM run_owners WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else str(row[0])

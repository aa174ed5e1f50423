"""API tokens: shown once when issued, stored as SHA-256, checked in constant time.

A token reads ``stk_<id>_<secret>``: ``id`` (12 hex digits) names its row,
``secret`` is 32 random bytes (base64url). Only the SHA-256 of the whole
token is stored, so the database alone lets nobody in; a presented token is
hashed and compared with :func:`hmac.compare_digest`. A hash of 256 random
bits needs no salt or slow hash: there is no dictionary to guess from.

Every request is authenticated on the event loop, which must never wait on
the disk. The store keeps the active tokens in memory and asks SQLite on one
long-lived read connection whether anyone committed since (``PRAGMA
data_version``: a few microseconds, from WAL shared memory, and it never
waits: a busy database answers from memory this once). A token revoked with
``stockade tokens revoke`` in another process is refused from the next
request on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ErrorCode, InfrastructureError, UsageError
from orchestrator.private import private_file
from orchestrator.server._roles import Role

__all__ = ["PRINCIPAL_PATTERN", "IssuedToken", "TokenInfo", "TokenStore"]

PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
"""What a principal's name may look like (policies match it with globs)."""

_PREFIX = "stk"
_TOKEN = re.compile(r"^stk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    principal TEXT NOT NULL,
    roles TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""
_COLUMNS = "id, sha256, principal, roles, note, created_at, revoked_at"
# Compared against when the id is unknown, so both answers take the same time.
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """What the store knows about a token (never the token itself)."""

    id: str
    """Public id of the token (part of the token; safe to show and log)."""
    principal: str
    """Who the token acts for: the principal policies and rate limits see."""
    roles: frozenset[Role]
    """What the token may do."""
    note: str | None
    """The issuer's words (what the token is for)."""
    created_at: float
    """Unix time it was issued."""
    revoked_at: float | None
    """Unix time it was revoked; None while it works."""

    @property
    def active(self) -> bool:
        """Whether the token still opens the door."""
        return self.revoked_at is None


@dataclass(frozen=True, kw_only=True)
class IssuedToken:
    """A token just created: the only moment its secret exists outside its holder."""

    info: TokenInfo
    """What the store keeps about it."""
    token: str
    """The bearer token; only its SHA-256 is stored."""


@dataclass(frozen=True, kw_only=True)
class _Known:
    sha256: str
    info: TokenInfo


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _info(row: sqlite3.Row) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        principal=row["principal"],
        roles=frozenset(Role(role) for role in row["roles"].split(",")),
        note=row["note"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class TokenStore:
    """API tokens in one SQLite file (in the state directory by default)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 10.0,
    ) -> None:
        """Open (creating if needed, readable by its owner only) the database.

        The active tokens are read here, waiting for a busy database, so the
        memory they are answered from afterwards is never a guess.
        """
        self._path = Path(path)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        try:
            # Hashes only, but nobody else needs to read them.
            private_file(self._path)
        except OSError as exc:
            raise self._error("tokens.open", exc) from exc
        with self._connect("tokens.open") as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._reader = self._open_reader()
        self._version: int | None = None
        self._known: dict[str, _Known] = {}
        self._ever_issued = False
        self._refresh(wait=True)
        # From now on never wait on the event loop: a busy database is asked again next time.
        self._reader.execute("PRAGMA busy_timeout=0")

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _error(self, op: str, exc: BaseException) -> InfrastructureError:
        return InfrastructureError(
            f"{self._path}: {exc}", code=ErrorCode.TOKENS, op=op, retryable=True
        )

    @contextlib.contextmanager
    def _connect(self, op: str) -> Iterator[sqlite3.Connection]:
        try:
            with contextlib.closing(
                sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
            ) as db:
                db.row_factory = sqlite3.Row
                yield db
        except sqlite3.Error as exc:
            raise self._error(op, exc) from exc

    def _open_reader(self) -> sqlite3.Connection:
        try:
            # Shared by the threads that authenticate (normally the event
            # loop's alone); every use holds self._lock.
            reader = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise self._error("tokens.open", exc) from exc
        reader.row_factory = sqlite3.Row
        return reader

    def close(self) -> None:
        """Close the read connection (the store must not be used afterwards)."""
        with self._lock:
            self._reader.close()

    def _refresh(self, *, wait: bool = False) -> None:
        """Reload the tokens if anyone committed since the last look; ``wait``: raise on error."""
        with self._lock:
            try:
                version = self._reader.execute("PRAGMA data_version").fetchone()[0]
                if version == self._version:
                    return
                rows = self._reader.execute(f"SELECT {_COLUMNS} FROM tokens").fetchall()  # noqa: S608
            except sqlite3.Error as exc:
                if wait:
                    raise self._error("tokens.read", exc) from exc
                return
            self._known = {
                row["id"]: _Known(sha256=row["sha256"], info=_info(row))
                for row in rows
                if row["revoked_at"] is None
            }
            self._ever_issued = bool(rows)
            self._version = version

    def create(
        self, *, principal: str, roles: Iterable[Role], note: str | None = None
    ) -> IssuedToken:
        """Issue a token for ``principal`` with ``roles``; the result holds the token, once."""
        if not PRINCIPAL_PATTERN.fullmatch(principal):
            raise UsageError(
                f"principal {principal!r}: use 1-128 letters, digits and . _ @ + - "
                "(starting with a letter or digit)"
            )
        granted = frozenset(Role(role) for role in roles)
        if not granted:
            raise UsageError("a token needs at least one role")
        token_id = secrets.token_hex(6)
        token = f"{_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        info = TokenInfo(
            id=token_id,
            principal=principal,
            roles=granted,
            note=note,
            created_at=self._clock(),
            revoked_at=None,
        )
        with self._connect("tokens.create") as db:
            db.execute(
                f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",  # noqa: S608
                (token_id, _digest(token), principal, ",".join(sorted(granted)), note,
                 info.created_at),
            )  # fmt: skip
        return IssuedToken(info=info, token=token)

    def revoke(self, token_id: str) -> bool:
        """Revoke a token; False when it is unknown or already revoked."""
        with self._connect("tokens.revoke") as db:
            cursor = db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self._clock(), token_id),
            )
        return cursor.rowcount == 1

    def tokens(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        """Every token (active ones only by default), oldest first."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._connect("tokens.list") as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM tokens{where} ORDER BY created_at, id"  # noqa: S608
            ).fetchall()
        return [_info(row) for row in rows]

    def authenticate(self, token: str) -> TokenInfo | None:
        """The active token ``token`` is, or None. Never waits on the disk."""
        self._refresh()
        match = _TOKEN.fullmatch(token)
        known = self._known.get(match.group(1)) if match else None
        presented = _digest(token) if match else _DUMMY_HASH
        expected = known.sha256 if known else _DUMMY_HASH
        if hmac.compare_digest(presented, expected) and known is not None:
            return known.info
        return None

    def is_active(self, token_id: str) -> bool:
        """Whether the token with public id ``token_id`` still works. Never waits on the disk."""
        self._refresh()
        return token_id in self._known

    def has_active(self) -> bool:
        """Whether any token is active now."""
        self._refresh()
        return bool(self._known)

    def ever_issued(self) -> bool:
        """Whether a token (active or since revoked) was ever issued from this database."""
        self._refresh()
        return self._ever_issued

"""Sign-in sessions of the approval page, and the CSRF tokens bound to them.

A person signs in once with an API token; the page then knows them by a
session cookie (random, 256 bits, HttpOnly, SameSite=Strict). Sessions live
in this process's memory only: a restarted server asks everyone to sign in
again, and signing out forgets the session at once. The token itself stays
in memory beside its session so each request checks it again: revoking a
token (``stockade tokens revoke``) ends its sessions on their next request.

Every form carries a CSRF token: for a session, a random value kept with it;
for the sign-in form (no session yet), a keyed hash of a nonce in a
short-lived cookie of its own. Both are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SESSION_LIFETIME_S", "SIGN_IN_LIFETIME_S", "Session", "Sessions", "same_secret"]

SESSION_LIFETIME_S = 8 * 3600
"""How long a sign-in lasts (a working day); the cookie's Max-Age too."""
SIGN_IN_LIFETIME_S = 3600
"""How long a sign-in form may stay open before its CSRF nonce expires."""
_MAX_SESSIONS = 10_000
_MAX_SESSIONS_PER_TOKEN = 32
"""Browsers one token may keep signed in: past it, that token's oldest session ends, so
signing in again and again with one token never ends anyone else's."""


def same_secret(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` is ``expected``, in time that does not depend on where they differ."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _key(session_id: str) -> str:
    # Sessions are found by a hash of their id: a dict lookup's timing then
    # says nothing about the ids it holds.
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Session:
    """One signed-in browser."""

    id: str
    """The cookie's value; a secret of the browser's."""
    token: str
    """The API token signed in with (checked again on every request; never sent back)."""
    csrf: str
    """The CSRF token every form of this session carries."""
    expires_at: float
    """Unix time the session ends."""


class Sessions:
    """The page's sessions, in memory, bounded; and the sign-in form's CSRF nonces."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        # Signs the sign-in form's nonces; a new one each start (the form is
        # reloaded anyway after a restart).
        self._sign_in_key = secrets.token_bytes(32)

    def open(self, token: str) -> Session:
        """A new session for ``token`` (an API token already checked by the caller)."""
        now = self._clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
        # The oldest go first (dicts keep insertion order): this token's own, then, at the
        # cap of every session, anyone's (which takes that many tokens, not one).
        own = [key for key, other in self._sessions.items() if other.token == token]
        for key in own[: max(0, len(own) - _MAX_SESSIONS_PER_TOKEN + 1)]:
            del self._sessions[key]
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + SESSION_LIFETIME_S,
        )
        self._sessions[_key(session.id)] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session whose cookie is ``session_id``; None if unknown or expired."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        """Forget the session (signing out); nothing if there is none."""
        if session_id:
            self._sessions.pop(_key(session_id), None)

    def sign_in_nonce(self) -> str:
        """A fresh nonce for the sign-in form's cookie."""
        return secrets.token_urlsafe(32)

    def sign_in_csrf(self, nonce: str) -> str:
        """The CSRF token the sign-in form must carry alongside the cookie ``nonce``."""
        return hmac.new(self._sign_in_key, nonce.encode("utf-8"), hashlib.sha256).hexdigest()

"""Limits shared by every orchestrator that reaches one Redis server.

Each rate check is one Lua script (:mod:`orchestrator.policy._redis_lua`)
run atomically by the server: it reads the call's GCRA states, decides on the
server's clock (``TIME``) and charges every cell only if all allow, exactly
as :func:`~orchestrator.policy._limitstore.gcra` does for the other stores.
Orchestrators on many hosts therefore enforce one limit as strictly as one
process does, and their clocks do not matter. The script is sent by its
SHA-1 (``EVALSHA``); a server that does not know it yet (new, restarted,
flushed) gets the text once (``EVAL``), which also caches it.

Model budgets are a hash per run (``calls``, ``tokens``): a model call is
reserved before it is made (:meth:`RedisLimitStore.count_call` checks both
limits and counts the call in one script) and its tokens are settled after
the reply (:meth:`RedisLimitStore.add_tokens`).

Keys live under a prefix (default ``stockade:``): ``<prefix>rate:<cell>`` and
``<prefix>budget:<run>``. Every key has a TTL, so idle limits go away by
themselves: a rate state when its TAT has passed (it then carries nothing),
a budget a week after its last change (a run's end forgets it at once).

Redis unreachable (refused, timed out, loading, read-only replica, wrong
password): with ``on_unavailable="closed"`` (the default) a rate check is a
refusal whose limit names the store and budget steps raise a retryable
:class:`~orchestrator.errors.InfrastructureError`; with ``"open"`` calls are
admitted and budgets count nothing. ``on_unavailable_hook`` is told of each
(``"denied"`` or ``"admitted"``) for the metric. After a failure the store
does not try the server again for ``cooldown_s``, so a server that stops
answering costs one timeout, not one per call. An outage is logged once when
it starts and once when the server answers again.

Every method blocks on the network (about 0.1 ms to a local server): the
gateway calls :meth:`~RedisLimitStore.acquire` in a thread, since
:meth:`~RedisLimitStore.try_acquire` always declines. A reply lost after the
server ran a step is retried once on a fresh connection, which may charge a
call twice: the error is on the strict side.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from orchestrator.errors import ErrorCode, InfrastructureError, UsageError
from orchestrator.policy._limitstore import BudgetUsage, LimitStore, RateCell, RateVerdict
from orchestrator.policy._redis_lua import ACQUIRE, ADD_TOKENS, COUNT_CALL

if TYPE_CHECKING:
    import redis

__all__ = ["OnUnavailable", "RedisLimitStore", "describe_redis_url"]

_log = logging.getLogger(__name__)

OnUnavailable = Literal["closed", "open"]
"""What a limit check answers when Redis cannot be reached: refuse, or admit."""

_BUDGET_TTL_S = 7 * 24 * 3600
_SCHEMES = ("redis", "rediss", "unix")
# A fresh connection is a retry's price (a pooled one the server closed, after
# its restart); more would hold every call waiting on a dead server.
_RETRIES = 1


def describe_redis_url(url: str) -> str:
    """``url`` without its password, to name the store in errors, logs and labels.

    Raises :class:`ValueError` (naming what is wrong) for a URL that is not a
    Redis URL: scheme ``redis``, ``rediss`` or ``unix``, a host (or a socket
    path), a valid port, a numeric database.
    """
    shown = _without_password(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown!r} is not a valid URL: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"{shown!r}: the scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{shown!r}: give the socket's path (unix:///run/redis.sock)")
        return f"unix://{parts.path}"
    if not parts.hostname:
        raise ValueError(f"{shown!r}: give the server's host (redis://host:6379/0)")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"{shown!r}: the database must be a number, got {database!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or 6379}/{database}"


def _without_password(url: str) -> str:
    """``url`` with any password in it replaced by ``***``, for error messages."""
    return re.sub(r"^([^:/]*://[^:@/]*):[^@/]*@", r"\1:***@", url)


class RedisLimitStore(LimitStore):
    """Rate limits and model budgets in Redis, shared by every orchestrator using the server.

    The platform opens one per process when ``limits.store`` is a ``redis://``
    URL and hands it to the gateway; the owner closes it at shutdown.
    Thread-safe (the client keeps a pool of connections).
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "stockade:",
        on_unavailable: OnUnavailable = "closed",
        on_unavailable_hook: Callable[[str], None] | None = None,
        timeout_s: float = 0.5,
        cooldown_s: float = 1.0,
        password: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        """Use the server at ``url`` (nothing is sent until the first step).

        ``timeout_s`` bounds connecting and each reply; ``cooldown_s`` is how
        long the store answers "unavailable" without trying after a failure
        (also the ``retry_after`` of a fail-closed refusal). ``password`` is
        used when the URL has none (keep it out of files). ``client`` is an
        already configured ``redis.Redis`` (``url`` then only names it).
        Raises :class:`~orchestrator.errors.UsageError` for a bad URL or
        setting, and :class:`~orchestrator.errors.InfrastructureError` when
        the ``redis`` package is not installed.
        """
        try:
            self._name = describe_redis_url(url)
        except ValueError as exc:
            raise UsageError(f"limits.store: {exc}") from None
        if on_unavailable not in ("closed", "open"):
            raise UsageError(f"on_unavailable must be closed or open, got {on_unavailable!r}")
        if timeout_s <= 0 or cooldown_s < 0:
            raise UsageError("timeout_s must be positive and cooldown_s not negative")
        self._prefix = key_prefix
        self._open = on_unavailable == "open"
        self._hook = on_unavailable_hook
        self._cooldown_s = cooldown_s
        self._down_until = 0.0
        self._down = False
        self._last_error = ""
        self._down_lock = threading.Lock()
        self._reason = f"limit store {self._name} unavailable"
        self._client = client if client is not None else _connect(url, timeout_s, password)
        self._errors = _redis_errors()

    @property
    def name(self) -> str:
        """The server, as ``redis://host:port/db`` (never the password)."""
        return self._name

    @property
    def client(self) -> redis.Redis:
        """The Redis client (for tests and operators' tools)."""
        return self._client

    def rate_key(self, cell_key: str) -> str:
        """The Redis key of a GCRA state."""
        return f"{self._prefix}rate:{cell_key}"

    def budget_key(self, budget: str) -> str:
        """The Redis key (a hash) of a model budget."""
        return f"{self._prefix}budget:{budget}"

    def acquire(self, cells: Sequence[RateCell]) -> RateVerdict:
        """Check and charge every cell in one server-side step on the server's clock."""
        if not cells:
            return RateVerdict(allowed=True)
        arguments: list[float] = []
        for cell in cells:
            arguments += (cell.interval_s, cell.tolerance_s)
        try:
            allowed, wait, refused = self._script(
                ACQUIRE, [self.rate_key(cell.key) for cell in cells], [repr(a) for a in arguments]
            )
        except _Unavailable:
            self._unavailable()
            if self._open:
                return RateVerdict(allowed=True)
            return RateVerdict(
                allowed=False, retry_after_s=max(self._cooldown_s, 0.1), reason=self._reason
            )
        if int(allowed):
            return RateVerdict(allowed=True)
        return RateVerdict(allowed=False, retry_after_s=float(wait), refused=int(refused) - 1)

    def count_call(
        self, key: str, *, max_calls: int | None, max_tokens: int | None
    ) -> tuple[bool, BudgetUsage]:
        """Reserve one more model call of ``key`` if both maxima have room."""
        limits = [-1 if max_calls is None else max_calls, -1 if max_tokens is None else max_tokens]
        try:
            counted, calls, tokens = self._script(
                COUNT_CALL, [self.budget_key(key)], [*limits, _BUDGET_TTL_S]
            )
        except _Unavailable as down:
            self._unavailable()
            if self._open:
                return True, BudgetUsage()
            raise self._failure("count_call", down) from down.cause
        return bool(int(counted)), BudgetUsage(calls=int(calls), tokens=int(tokens))

    def add_tokens(self, key: str, tokens: int) -> None:
        """Settle ``tokens`` a model call used on ``key``."""
        try:
            self._script(ADD_TOKENS, [self.budget_key(key)], [tokens, _BUDGET_TTL_S])
        except _Unavailable as down:
            if self._open:
                _log.warning("%s: %d tokens not counted (%s)", self._reason, tokens, down)
                return
            raise self._failure("add_tokens", down) from down.cause

    def usage(self, key: str) -> BudgetUsage:
        """What ``key`` has used."""
        calls, tokens = self._call("usage", "hmget", self.budget_key(key), "calls", "tokens")
        return BudgetUsage(calls=int(calls or 0), tokens=int(tokens or 0))

    def forget(self, key: str) -> None:
        """Drop ``key``'s budget (if Redis is away, its TTL drops it later)."""
        try:
            self._call("forget", "delete", self.budget_key(key))
        except InfrastructureError:
            _log.warning("%s: budget %r left to expire", self._reason, key)

    def tracked_keys(self) -> int:
        """How many GCRA states exist under this store's prefix; for tests and operators."""
        pattern = f"{_glob_escape(self._prefix)}rate:*"
        return sum(1 for _ in self._client.scan_iter(match=pattern, count=1000))

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def _call(self, op: str, command: str, *arguments: Any) -> Any:
        """One plain command; unavailability raises (or, failing open, answers nothing)."""
        try:
            return self._guarded(lambda: getattr(self._client, command)(*arguments))
        except _Unavailable as down:
            if self._open:
                return [None, None] if command == "hmget" else 0
            raise self._failure(op, down) from down.cause

    def _script(self, script: str, keys: list[str], arguments: Sequence[Any]) -> Any:
        """Run ``script`` by its SHA-1, sending its text when the server lacks it."""

        def run() -> Any:
            try:
                return self._client.evalsha(_SHAS[script], len(keys), *keys, *arguments)
            except self._errors.NoScriptError:
                # A new, restarted or flushed server: EVAL sends the text and caches it.
                return self._client.eval(script, len(keys), *keys, *arguments)

        return self._guarded(run)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            raise _Unavailable(self._last_error, None)
        errors = self._errors
        try:
            result = step()
        except (errors.ConnectionError, errors.TimeoutError, errors.ReadOnlyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            with self._down_lock:
                self._down_until = time.monotonic() + self._cooldown_s
                self._last_error = error
                starts, self._down = not self._down, True
            if starts:  # one line per outage, not one per call
                _log.warning(
                    "%s (%s); failing %s until it answers",
                    self._reason,
                    error,
                    "open" if self._open else "closed",
                )
            raise _Unavailable(error, exc) from exc
        except errors.RedisError as exc:
            raise InfrastructureError(
                f"{self._name}: {type(exc).__name__}: {exc}",
                code=ErrorCode.CLOSED,
                op="limits.redis",
                retryable=False,
            ) from exc
        if self._down:
            with self._down_lock:
                ended, self._down, self._down_until = self._down, False, 0.0
            if ended:
                _log.warning("%s no longer: it answers again", self._reason)
        return result

    def _unavailable(self) -> None:
        """Count one step answered without the server (for the metric)."""
        if self._hook is not None:
            self._hook("admitted" if self._open else "denied")

    def _failure(self, op: str, down: _Unavailable) -> InfrastructureError:
        return InfrastructureError(
            f"{self._reason} ({down}); limits.on_unavailable is closed, so nothing is counted "
            "and the step is refused",
            code=ErrorCode.CLOSED,
            op=f"limits.{op}",
            retryable=True,
        )


class _Unavailable(Exception):
    """The server could not be reached (or was in cooldown)."""

    def __init__(self, message: str, cause: BaseException | None) -> None:
        super().__init__(message)
        self.cause = cause


def _connect(url: str, timeout_s: float, password: str | None) -> redis.Redis:
    try:
        # Optional (stockade[redis]): the single-host quick start never imports it.
        import redis  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415
    except ImportError as exc:
        raise InfrastructureError(
            "limits.store is a Redis URL but the redis package is missing: "
            "pip install 'stockade[redis]'",
            code=ErrorCode.INSTALLATION,
            op="limits.open",
            retryable=False,
        ) from exc
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), _RETRIES),
        decode_responses=True,
        # The URL's own password, if it has one, wins.
        **({} if password is None else {"password": password}),
    )


def _redis_errors() -> Any:
    import redis.exceptions  # noqa: PLC0415 - optional, as in _connect

    return redis.exceptions


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_SHAS = {script: _sha1(script) for script in (ACQUIRE, COUNT_CALL, ADD_TOKENS)}


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)

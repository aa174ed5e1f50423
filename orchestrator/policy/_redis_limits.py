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

Every synchronous method blocks on the network (about 0.1 ms to a local
server). The gateway awaits :meth:`~RedisLimitStore.acquire_async` instead,
which sends the same script through ``redis.asyncio`` on the caller's event
loop: no thread hop, whose two wake-ups cost more than the round trip itself
on a loaded 2-core VM (see ``docs/benchmarks.md``, "Redis limit check"). The
asynchronous client is one per event loop (its connections belong to the loop
that opened them); :meth:`~RedisLimitStore.aclose` closes the caller's. A
reply lost after the server ran a step is retried once on a fresh connection,
which may charge a call twice: the error is on the strict side.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from orchestrator.errors import ErrorCode, InfrastructureError, UsageError
from orchestrator.policy._limitstore import BudgetUsage, LimitStore, RateCell, RateVerdict
from orchestrator.policy._redis_lua import ACQUIRE, ADD_TOKENS, COUNT_CALL

if TYPE_CHECKING:
    import redis
    import redis.asyncio

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
        # The asynchronous side, opened per event loop on first use; with a
        # caller's own client there is nothing to open it from, so that store
        # answers async callers from a thread.
        self._connect_async: Callable[[], redis.asyncio.Redis] | None = (
            None if client is not None else lambda: _connect_async(url, timeout_s, password)
        )
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Future[None]] = set()

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
            return _ALLOWED
        keys, arguments = self._acquire_arguments(cells)
        try:
            reply = self._script(ACQUIRE, keys, arguments)
        except _Unavailable:
            return self._acquire_unavailable()
        return _verdict(reply)

    async def acquire_async(self, cells: Sequence[RateCell]) -> RateVerdict:
        """:meth:`acquire` on the caller's event loop (``redis.asyncio``), never blocking it."""
        if not cells:
            return _ALLOWED
        client = self._async_client()
        if client is None:
            return await asyncio.to_thread(self.acquire, cells)
        keys, arguments = self._acquire_arguments(cells)
        sha = _SHAS[ACQUIRE]

        async def run() -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *arguments)
            except self._errors.NoScriptError:
                return await client.eval(ACQUIRE, len(keys), *keys, *arguments)

        try:
            reply = await self._guarded_async(run)
        except _Unavailable:
            return self._acquire_unavailable()
        return _verdict(reply)

    def _acquire_arguments(self, cells: Sequence[RateCell]) -> tuple[list[str], list[str]]:
        keys = [self.rate_key(cell.key) for cell in cells]
        arguments: list[str] = []
        for cell in cells:
            arguments += (repr(cell.interval_s), repr(cell.tolerance_s))
        return keys, arguments

    def _acquire_unavailable(self) -> RateVerdict:
        self._unavailable()
        if self._open:
            return _ALLOWED
        return RateVerdict(
            allowed=False, retry_after_s=max(self._cooldown_s, 0.1), reason=self._reason
        )

    def _async_client(self) -> redis.asyncio.Redis | None:
        """This event loop's client, opened on first use (None: only a thread can ask)."""
        if self._connect_async is None:
            return None
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._connect_async()
        return client

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
        """Close the clients' connections.

        An event loop's asynchronous client is closed on that loop: at once when
        the loop is idle, in the background when this is called on the loop
        itself (prefer :meth:`aclose` there, which waits for it).
        """
        self._client.close()
        clients = list(self._async_clients.items())
        self._async_clients.clear()
        for loop, client in clients:
            self._close_on(loop, client)

    async def aclose(self) -> None:
        """Close the clients' connections, waiting for this event loop's to close."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _close_on(self, loop: asyncio.AbstractEventLoop, client: redis.asyncio.Redis) -> None:
        if loop.is_closed():
            return  # its connections went with it
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        closing: asyncio.Future[None]
        if running is loop:
            closing = loop.create_task(client.aclose())
        elif loop.is_running():
            closing = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))
            if running is None:
                return  # another thread's loop closes it; nothing here could wait for it
        else:
            loop.run_until_complete(client.aclose())
            return
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

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
        self._check_cooldown()
        try:
            result = step()
        except self._errors.RedisError as exc:
            raise self._failed(exc) from exc
        self._answered()
        return result

    async def _guarded_async(self, step: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`_guarded` for a step on the event loop: the same cooldown and outage log."""
        self._check_cooldown()
        try:
            result = await step()
        except self._errors.RedisError as exc:
            raise self._failed(exc) from exc
        self._answered()
        return result

    def _check_cooldown(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise _Unavailable(self._last_error, None)

    def _failed(self, exc: Exception) -> Exception:
        """What a step that failed with ``exc`` raises: unavailable, or a plain error."""
        errors = self._errors
        if not isinstance(exc, errors.ConnectionError | errors.TimeoutError | errors.ReadOnlyError):
            return InfrastructureError(
                f"{self._name}: {type(exc).__name__}: {exc}",
                code=ErrorCode.CLOSED,
                op="limits.redis",
                retryable=False,
            )
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
        return _Unavailable(error, exc)

    def _answered(self) -> None:
        if self._down:
            with self._down_lock:
                ended, self._down, self._down_until = self._down, False, 0.0
            if ended:
                _log.warning("%s no longer: it answers again", self._reason)

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


_ALLOWED = RateVerdict(allowed=True)


def _verdict(reply: Any) -> RateVerdict:
    """The acquire script's reply ``[allowed, wait, refused index from 1]`` as a verdict."""
    allowed, wait, refused = reply
    if int(allowed):
        return _ALLOWED
    return RateVerdict(allowed=False, retry_after_s=float(wait), refused=int(refused) - 1)


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


def _connect_async(url: str, timeout_s: float, password: str | None) -> redis.asyncio.Redis:
    """The same client as :func:`_connect` for one event loop (its connections live there)."""
    import redis.asyncio  # noqa: PLC0415 - optional, as in _connect
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    options: dict[str, Any] = {} if password is None else {"password": password}
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), _RETRIES),
        decode_responses=True,
        **options,
    )
    return client


def _redis_errors() -> Any:
    import redis.exceptions  # noqa: PLC0415 - optional, as in _connect

    return redis.exceptions


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_SHAS = {script: _sha1(script) for script in (ACQUIRE, COUNT_CALL, ADD_TOKENS)}


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)

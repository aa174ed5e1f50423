"""TLS termination for hosts that get a credential: the proxy reads the request, adds the
header, and sends it on over its own verified TLS connection.

Only for a CONNECT to a (host, port) the call's credentials name; everything
else stays an opaque tunnel. The sandbox's TLS is terminated with a leaf of the
deployment's CA for exactly that host: the handshake fails unless the SNI names
it (see :mod:`orchestrator.sandbox.egress_ca`), and each request's ``Host`` must
name it too (else ``421``), so the CONNECT target, the SNI and the Host agree.
HTTP/1.1 only (ALPN), parsed with h11.

Per request: hop-by-hop and proxy headers are dropped, any header of the
credential's name the sandbox sent is replaced by the real one, and the
response is asked for uncompressed (``Accept-Encoding: identity``; a
compressed answer is refused, since the secret could not be found in it).
Every form of the secret is redacted from the response's headers and body
before the sandbox reads them (see :mod:`orchestrator.sandbox._egress_redact`),
so the body is re-framed (chunked). A redirect is the sandbox's to follow: its
next request goes to whatever host it names, and gets that host's credential
or none — the header never follows a redirect to another host.

Upstream connections are verified against the host's trust store (or the
context given), and kept open between requests in a pool per (host, port,
secret), shared by every sandbox, so most calls skip the upstream handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import h11

from orchestrator.sandbox._egress_redact import StreamRedactor
from orchestrator.sandbox.credentials import Credential

__all__ = [
    "InterceptedConnection",
    "Interception",
    "ProxyCA",
    "Refusal",
    "Traffic",
    "UpstreamPool",
    "default_upstream_tls",
    "upstream_context",
]

_CHUNK = 64 * 1024
_MAX_HEAD = 16 * 1024
# Headers that belong to one hop, never forwarded (RFC 9110 7.6.1), and ours to set.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
_NO_BODY_STATUSES = frozenset({204, 304})

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
PoolKey = tuple[str, int, str, bytes | None]
"""Host, port, secret and the CA bundle trusted for it: what makes kept connections alike."""
OpenUpstream = Callable[[], Awaitable[Streams]]
"""Resolves, checks and connects (plain TCP) to the bound host, as for any connection."""


def default_upstream_tls() -> ssl.SSLContext:
    """The proxy's own TLS to real hosts: the host's trust store, HTTP/1.1."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


@functools.lru_cache(maxsize=32)
def upstream_context(ca_pem: bytes) -> ssl.SSLContext:
    """The proxy's TLS to a host whose binding names the CA certificates to trust (PEM),
    instead of the system's store; HTTP/1.1. One context per distinct bundle.

    Raises :class:`ssl.SSLError` or :class:`ValueError` when ``ca_pem`` holds no certificate.
    """
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.set_alpn_protocols(["http/1.1"])
    return context


class Refusal(Exception):
    """The proxy answers the request itself (with ``status``), and closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""Methods sent again on a fresh connection when a pooled one fails (RFC 9110, 9.2.2)."""


@dataclass(eq=False, kw_only=True)
class _Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = field(default_factory=time.monotonic)
    reused: bool = False

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    """Idle TLS connections to bound hosts, per :data:`PoolKey`, shared by all gates."""

    def __init__(self, *, max_idle: int = 4, idle_s: float = 30.0) -> None:
        """Keep at most ``max_idle`` per key, each for at most ``idle_s`` seconds."""
        self._max_idle = max_idle
        self._idle_s = idle_s
        self._idle: dict[PoolKey, list[_Upstream]] = {}

    def take(self, key: PoolKey) -> _Upstream | None:
        """A live idle connection for ``key``, or None."""
        idle = self._idle.get(key, [])
        while idle:
            upstream = idle.pop()
            fresh = time.monotonic() - upstream.idle_since < self._idle_s
            if fresh and not upstream.reader.at_eof() and not upstream.writer.is_closing():
                upstream.reused = True
                return upstream
            upstream.close()
        return None

    def give(self, key: PoolKey, upstream: _Upstream) -> None:
        """Keep ``upstream`` for the next request to ``key`` (or close it when full)."""
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            upstream.close()
            return
        upstream.http.start_next_cycle()
        upstream.idle_since = time.monotonic()
        idle.append(upstream)

    async def close(self) -> None:
        """Close every idle connection."""
        pending = [upstream for idle in self._idle.values() for upstream in idle]
        self._idle.clear()
        for upstream in pending:
            upstream.close()
        for upstream in pending:
            with contextlib.suppress(OSError, ssl.SSLError):
                await upstream.writer.wait_closed()


class ProxyCA(Protocol):
    """The CA a proxy terminates TLS with: :class:`~orchestrator.sandbox.egress_ca.DeploymentCA`
    in the orchestrator, :class:`~orchestrator.sandbox._host_credentials.HostCA` on a Ray host."""

    @property
    def hosts(self) -> frozenset[str]:
        """The names it may vouch for."""
        ...

    @property
    def certificate_pem(self) -> bytes:
        """Its certificate (what sandboxes trust)."""
        ...

    def trust_bundle(self) -> bytes:
        """Trust anchors and its certificate: the sandbox's ``SSL_CERT_FILE``."""
        ...

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for ``host`` (SNI ``host`` only)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Interception:
    """What the proxy needs to terminate TLS for the hosts of credentials."""

    ca: ProxyCA
    """Issues the leaves the sandboxes see (the deployment's CA, or a host's view of it)."""
    profiles: frozenset[str]
    """Profiles whose sandboxes get the CA (those some credential is bound to)."""
    upstream_tls: ssl.SSLContext = field(default_factory=default_upstream_tls)
    """The proxy's TLS to the real hosts (tests pass one trusting their own server)."""
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    """Upstream connections kept between requests."""


@dataclass(kw_only=True)
class Traffic:
    """What one intercepted connection carried (the proxy's event reads it)."""

    bytes_out: int = 0
    bytes_in: int = 0
    requests: int = 0
    reason: str = ""
    address: str | None = None


async def _next(http: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading as needed (EOF included)."""
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event
        http.receive_data(await reader.read(_CHUNK))


def _names_host(value: bytes, host: str, port: int) -> bool:
    named = value.decode("latin-1").strip().lower().rstrip(".")
    return named in (host, f"{host}:{port}") or (port == 443 and named == f"{host}:443")


class InterceptedConnection:
    """Serves the requests of one terminated client connection, then ends."""

    def __init__(
        self,
        *,
        interception: Interception,
        credential: Credential,
        open_upstream: OpenUpstream,
        max_bytes: int,
        connect_timeout_s: float,
        traffic: Traffic,
    ) -> None:
        self._interception = interception
        self._credential = credential
        self._open_upstream = open_upstream
        self._budget = max_bytes
        self._connect_timeout_s = connect_timeout_s
        self._traffic = traffic
        self._key: PoolKey = (
            credential.host,
            credential.port,
            credential.name,
            credential.upstream_ca,
        )

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Terminate TLS on the client's stream, then answer its requests until it closes."""
        host = self._credential.host
        try:
            await writer.start_tls(
                self._interception.ca.server_context(host),
                ssl_handshake_timeout=self._connect_timeout_s,
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self._traffic.reason = f"TLS with the sandbox failed (the SNI must name {host}): {exc}"
            return
        server = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        while True:
            try:
                request = await _next(server, reader)
                if not isinstance(request, h11.Request):
                    return  # closed, or not a request: nothing more to serve
                await self._answer(server, request, reader, writer)
            except Refusal as refusal:
                self._traffic.reason = self._redacted(refusal.reason)
                await self._refuse(server, writer, Refusal(refusal.status, self._traffic.reason))
                return
            except h11.ProtocolError as exc:
                self._traffic.reason = self._redacted(f"malformed HTTP from the sandbox: {exc}")
                await self._refuse(server, writer, Refusal(400, self._traffic.reason))
                return
            if server.our_state is not h11.DONE or server.their_state is not h11.DONE:
                return
            server.start_next_cycle()

    async def _answer(
        self,
        server: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        credential = self._credential
        named = [value for name, value in request.headers if name == b"host"]
        if len(named) != 1 or not _names_host(named[0], credential.host, credential.port):
            raise Refusal(
                421,
                f"the request's Host must name {credential.host}, the host this connection "
                "was opened to",
            )
        if server.client_is_waiting_for_100_continue:
            await self._send(
                writer, server.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        body = await self._request_body(server, reader)
        headers = self._upstream_headers(list(request.headers), len(body))
        target = request.target
        if not target.startswith(b"/"):
            raise Refusal(400, "requests through a terminated connection use origin-form paths")
        outgoing = h11.Request(method=request.method, target=target, headers=headers)
        self._traffic.requests += 1
        upstream, response = await self._exchange(outgoing, body)
        try:
            await self._relay_response(server, request, upstream, response, writer)
        except BaseException:
            upstream.close()
            raise

    async def _request_body(self, server: h11.Connection, reader: asyncio.StreamReader) -> bytes:
        # Bodies of tool calls are small; holding one lets a stale pooled connection be
        # replaced by a fresh one without asking the sandbox to send it again.
        parts: list[bytes] = []
        while True:
            event = await _next(server, reader)
            if isinstance(event, h11.Data):
                self._charge(len(event.data), outbound=True)
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise Refusal(400, "the request ended before its body")

    def _upstream_headers(
        self, headers: list[tuple[bytes, bytes]], body_length: int
    ) -> list[tuple[bytes, bytes]]:
        credential = self._credential
        ours = credential.header.lower().encode("latin-1")
        kept = [
            (name, value)
            for name, value in headers
            if name not in _HOP_BY_HOP
            and name not in (ours, b"accept-encoding", b"content-length")
            and not name.startswith(b"proxy-")
        ]
        return [
            *kept,
            (credential.header.encode("latin-1"), credential.header_value().encode("latin-1")),
            (b"accept-encoding", b"identity"),
            (b"content-length", str(body_length).encode()),
        ]

    async def _exchange(self, request: h11.Request, body: bytes) -> tuple[_Upstream, h11.Response]:
        """Send the request upstream (a pooled connection first); the response's head."""
        pooled = self._interception.pool.take(self._key)
        # Whatever ends a request here (the byte or time cap too) closes its connection:
        # out of the pool, nothing else would, and it would stay open until the server's
        # idle timeout.
        if pooled is not None:
            try:
                return pooled, await self._send_request(pooled, request, body)
            except (h11.ProtocolError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                pooled.close()  # the server closed it while idle, most likely: a fresh one
                if request.method not in _IDEMPOTENT:
                    # Unless the request may have reached the server: sent again, a POST
                    # could act twice. The sandbox reads the 502 and decides.
                    raise Refusal(
                        502, f"{self._credential.host} broke off the request: {exc}"
                    ) from exc
            except BaseException:
                pooled.close()
                raise
        fresh = await self._connect()
        try:
            return fresh, await self._send_request(fresh, request, body)
        except (h11.ProtocolError, OSError, ssl.SSLError) as exc:
            fresh.close()
            raise Refusal(502, f"{self._credential.host} broke off the request: {exc}") from exc
        except BaseException:
            fresh.close()
            raise

    async def _connect(self) -> _Upstream:
        host = self._credential.host
        reader, writer = await self._open_upstream()
        try:
            trusted = self._credential.upstream_ca
            await writer.start_tls(
                upstream_context(trusted) if trusted else self._interception.upstream_tls,
                server_hostname=host,
                ssl_handshake_timeout=self._connect_timeout_s,
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            writer.close()
            raise Refusal(502, f"TLS with {host} failed: {exc}") from exc
        except BaseException:
            writer.close()  # the time cap, mid-handshake
            raise
        peer = writer.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._traffic.address = str(peer[0])
        return _Upstream(reader=reader, writer=writer)

    async def _send_request(
        self, upstream: _Upstream, request: h11.Request, body: bytes
    ) -> h11.Response:
        http = upstream.http
        events: list[h11.Request | h11.Data | h11.EndOfMessage] = [request]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        data = [http.send(event) or b"" for event in events]
        self._charge(len(data[0]), outbound=True)  # the head; the body was charged as read
        upstream.writer.write(b"".join(data))
        await upstream.writer.drain()
        while True:
            event = await _next(http, upstream.reader)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the connection closed before a response")
            # 1xx answers are the proxy's business with the server, not the sandbox's.

    async def _relay_response(
        self,
        server: h11.Connection,
        request: h11.Request,
        upstream: _Upstream,
        response: h11.Response,
        writer: asyncio.StreamWriter,
    ) -> None:
        encoding = [v for n, v in response.headers if n == b"content-encoding"]
        if any(value.strip().lower() not in (b"", b"identity") for value in encoding):
            upstream.close()
            raise Refusal(
                502,
                f"{self._credential.host} sent a compressed response although asked not to; "
                "refused, as the secret could not be redacted from it",
            )
        redactor = StreamRedactor([self._credential.value])
        bodiless = request.method == b"HEAD" or response.status_code in _NO_BODY_STATUSES
        headers = [
            (name, redactor.redact(bytes(value)))
            for name, value in response.headers
            if name not in _HOP_BY_HOP and (bodiless or name != b"content-length")
        ]
        head = h11.Response(status_code=response.status_code, headers=headers, reason=b"")
        # Written in as few pieces as possible: whatever is ready goes out only when more
        # must be read from upstream. Small writes on the sandbox's side of the forwarder
        # meet Nagle and delayed ACKs (measured: 40 ms a response, written piece by piece).
        pending = bytearray(server.send(head) or b"")
        http = upstream.http
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                if pending:
                    await self._send(writer, bytes(pending))
                    pending.clear()
                http.receive_data(await upstream.reader.read(_CHUNK))
            elif isinstance(event, h11.Data):
                self._charge(len(event.data), outbound=False)
                pending += server.send(h11.Data(data=redactor.feed(event.data))) or b""
                if len(pending) >= _CHUNK:
                    await self._send(writer, bytes(pending))
                    pending.clear()
            elif isinstance(event, h11.EndOfMessage):
                rest = redactor.finish()
                if rest:
                    pending += server.send(h11.Data(data=rest)) or b""
                pending += server.send(h11.EndOfMessage()) or b""
                await self._send(writer, bytes(pending))
                break
            else:
                name = type(event).__name__
                raise h11.RemoteProtocolError(f"unexpected {name} in a response")
        if upstream.http.our_state is h11.DONE and upstream.http.their_state is h11.DONE:
            self._interception.pool.give(self._key, upstream)
        else:
            upstream.close()

    def _redacted(self, reason: str) -> str:
        """``reason`` without the secret: h11's errors quote the line they refuse, which
        may be the server's reflecting it, and reasons reach the sandbox and the audit log."""
        redacted = StreamRedactor([self._credential.value]).redact(reason.encode())
        return redacted.decode(errors="replace")

    def _charge(self, size: int, *, outbound: bool) -> None:
        self._budget -= size
        if outbound:
            self._traffic.bytes_out += size
        else:
            self._traffic.bytes_in += size
        if self._budget < 0:
            raise Refusal(502, "byte cap reached")

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if data:
            writer.write(data)
            await writer.drain()

    async def _refuse(
        self, server: h11.Connection, writer: asyncio.StreamWriter, refusal: Refusal
    ) -> None:
        if server.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is under way: closing the connection is all that is left
        body = f"stockade egress proxy: {refusal.reason}\n".encode()
        head = h11.Response(
            status_code=refusal.status,
            headers=[
                (b"content-type", b"text/plain"),
                (b"x-stockade-egress", b"refused"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        )
        with contextlib.suppress(h11.LocalProtocolError, OSError, ssl.SSLError):
            for event in (head, h11.Data(data=body), h11.EndOfMessage()):
                await self._send(writer, server.send(event))

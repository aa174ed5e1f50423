"""The egress proxy: the only way out of a sandbox, and only to allowed hosts.

Sandboxes never get a network interface. A profile that allows egress gets a
Unix socket mounted into its container; this proxy serves it. It speaks
enough HTTP for ordinary clients behind ``HTTP(S)_PROXY``: ``CONNECT host:port``
for HTTPS (and any TCP) and absolute-form ``GET http://host/…`` requests for
plain HTTP, one request per connection.

Every connection is checked twice before a packet leaves: the host name and
port against the allowlist, then every address the name resolves to against
the refused ranges (private, loopback, link-local — which holds the cloud
metadata address —, multicast, reserved), unless the policy names the network
explicitly. The proxy connects to an address it checked itself, never to the
name, so a DNS answer that changes between check and use (rebinding) gains
nothing. Bytes and time per connection are capped. Each connection, allowed
or refused, is reported through ``on_event``.

A call may carry credentials for some hosts (:meth:`EgressProxy.arm`): a
CONNECT to such a host is terminated and its requests get the credential's
header (see :mod:`orchestrator.sandbox._egress_tls`); every other CONNECT stays
an opaque tunnel, and plain-HTTP requests never get a credential (it would
cross the network in clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from orchestrator.sandbox._egress_tls import InterceptedConnection, Interception, Refusal, Traffic
from orchestrator.sandbox.credentials import Credential
from orchestrator.strict import StrictModel

__all__ = [
    "Connector",
    "EgressConnection",
    "EgressPolicy",
    "EgressProxy",
    "Resolver",
    "refusal_for_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""Resolves a host name to addresses (the proxy resolves; sandboxes cannot)."""
Connector = Callable[[IPAddress, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a TCP connection to an address the proxy has already checked."""

_MAX_HEAD = 16 * 1024
_CHUNK = 64 * 1024


class EgressPolicy(StrictModel):
    """Where a profile's sandboxes may connect, and how much."""

    allow: tuple[str, ...] = ()
    """Allowed destinations as ``host-glob`` or ``host-glob:port``; ports default to 80 and 443."""
    allow_networks: tuple[IPNetwork, ...] = ()
    """Refused ranges (private, loopback, link-local…) this policy still allows."""
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Bytes per connection, both directions together."""
    max_seconds: float = Field(default=30.0, gt=0)
    """Lifetime of one connection."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Time to resolve and connect."""

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` matches the allowlist (addresses are checked separately)."""
        host = host.lower().rstrip(".")
        for entry in self.allow:
            pattern, _, entry_port = entry.lower().rpartition(":")
            ports: tuple[int, ...]
            if not pattern or not entry_port.isdigit():
                pattern, ports = entry.lower(), (80, 443)
            else:
                ports = (int(entry_port),)
            if port in ports and fnmatch.fnmatchcase(host, pattern):
                return True
        return False


def refusal_for_address(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why an address may not be reached, or None when it may."""
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal_for_address(address.ipv4_mapped, allowed)
        # 6to4 (2002::/16) wraps an IPv4 address a relay may deliver to: judged by it. (Python
        # counts 2002::/16 as global whatever it wraps: 2002:a00:7:: is 10.0.0.7.)
        if address.sixtofour is not None and (
            why := refusal_for_address(address.sixtofour, allowed)
        ):
            return f"{address} is a 6to4 address of {address.sixtofour}: {why}"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local (includes cloud metadata)", address.is_link_local),
        ("private", address.is_private),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    )
    for kind, hit in checks:
        if hit:
            return f"{address} is a {kind} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


class EgressConnection(StrictModel):
    """One connection a sandbox tried through the egress proxy (results, audit log, metrics)."""

    host: str
    """Destination host as requested."""
    port: int
    """Destination port."""
    allowed: bool
    """The proxy let it through."""
    reason: str = ""
    """Why it was refused or cut short."""
    address: str | None = None
    """The address connected to, after the proxy's own resolution."""
    bytes_out: int = 0
    """Bytes sent."""
    bytes_in: int = 0
    """Bytes received."""
    duration_s: float = 0.0
    """How long the connection lasted."""
    secret: str | None = None
    """The secret the proxy added to this connection's requests: its name, never its value."""


@dataclass(kw_only=True)
class _Tracked:
    """A connection while the proxy serves it; becomes an :class:`EgressConnection` at the end."""

    host: str = ""
    port: int = 0
    allowed: bool = False
    reason: str = ""
    address: str | None = None
    bytes_out: int = 0
    bytes_in: int = 0
    secret: str | None = None
    started: float = field(default_factory=time.monotonic)
    deadline: float
    """When the time cap ends it, on the event loop's clock: counted from the connection's
    start, so a client slow to send its request (slowloris) gains no time."""

    def finished(self) -> EgressConnection:
        return EgressConnection(
            host=self.host,
            port=self.port,
            allowed=self.allowed,
            reason=self.reason,
            address=self.address,
            bytes_out=self.bytes_out,
            bytes_in=self.bytes_in,
            duration_s=time.monotonic() - self.started,
            secret=self.secret,
        )


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Resolve with the host's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def direct_connector(
    address: IPAddress, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a checked address."""
    return await asyncio.open_connection(str(address), port)


def _parse_target(method: str, target: str) -> tuple[str, int, str | None]:
    """Host, port and the origin-form path (None for CONNECT)."""
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise _Refused(400, f"CONNECT needs host:port, got {target!r}")
        return host.strip("[]"), int(port), None
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise _Refused(400, f"only absolute http:// URLs or CONNECT are proxied, got {target!r}")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return parts.hostname, parts.port or 80, path


class EgressProxy:
    """Serves one sandbox's egress socket under one policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        on_event: Callable[[EgressConnection], None] = lambda _event: None,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        interception: Interception | None = None,
    ) -> None:
        """``interception`` lets the proxy terminate TLS for the hosts of armed credentials."""
        self._policy = policy
        self._on_event = on_event
        self._resolver = resolver
        self._connector = connector
        self._interception = interception
        self._credentials: dict[tuple[str, int], Credential] = {}
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def arm(self, credentials: Sequence[Credential]) -> None:
        """Add ``credentials`` to the requests of the call this proxy now serves.

        Held in memory for the call only (the proxy serves one container, which
        serves one call). Raises :class:`ValueError` when a credential's host
        cannot be terminated (no interception, or outside the CA's names): the
        call must not run without the credential it was promised.
        """
        for credential in credentials:
            if self._interception is None:
                raise ValueError(f"no TLS interception to send secret {credential.name!r}")
            if credential.host not in self._interception.ca.hosts:
                raise ValueError(f"the egress CA does not cover {credential.host!r}")
        self._credentials = {(c.host, c.port): c for c in credentials}

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no connection is open (each has reported its event); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def serve(self, path: Path) -> asyncio.Server:
        """Listen on a Unix socket at ``path`` (mode 0666: the sandbox user connects)."""
        server = await asyncio.start_unix_server(self.handle, path=str(path))
        await asyncio.to_thread(path.chmod, 0o666)
        return server

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Serve one client connection: check, connect, relay."""
        event = _Tracked(deadline=asyncio.get_running_loop().time() + self._policy.max_seconds)
        self._active += 1
        self._idle.clear()
        try:
            upstream = await self._open(client_r, client_w, event)
            if upstream is None:
                return  # intercepted and served to its end
        except _Refused as refused:
            event.reason = refused.reason
            await self._answer(client_w, refused.status, refused.reason)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            event.reason = f"malformed request: {exc}"
            await self._answer(client_w, 400, event.reason)
        else:
            await self._relay(client_r, client_w, *upstream, event)
        finally:
            self._on_event(event.finished())
            client_w.close()
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _open(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, event: _Tracked
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The upstream connection to relay to; None when the connection was intercepted."""
        try:
            async with asyncio.timeout_at(event.deadline):
                head = await client_r.readuntil(b"\r\n\r\n")
        except TimeoutError as exc:
            cap = self._policy.max_seconds
            raise _Refused(408, f"time cap of {cap:g} s reached before the request") from exc
        if len(head) > _MAX_HEAD:
            raise _Refused(431, "request head too large")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        host, port, path = _parse_target(method.upper(), target)
        event.host, event.port = host, port
        if not self._policy.allows(host, port):
            raise _Refused(403, f"{host}:{port} is not in the egress allowlist")
        credential = self._credentials.get((host.lower().rstrip("."), port))
        if path is None and credential is not None:
            await self._intercept(client_r, client_w, event, credential)
            return None
        upstream_r, upstream_w = await self._connect(host, port, event)
        event.allowed = True
        if path is None:
            client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            kept = [
                line
                for line in header_lines
                if line and not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
            ]
            rewritten = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"])
            upstream_w.write(rewritten.encode("latin-1") + b"\r\n\r\n")
            event.bytes_out += len(rewritten)
        return upstream_r, upstream_w

    async def _intercept(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        event: _Tracked,
        credential: Credential,
    ) -> None:
        """Terminate the tunnel's TLS and serve its requests with the credential added."""
        assert self._interception is not None  # checked when armed
        host, port = event.host, event.port

        async def open_upstream() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            try:
                return await self._connect(host, port, event)
            except _Refused as refused:
                raise Refusal(refused.status, refused.reason) from refused

        event.allowed, event.secret = True, credential.name
        client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        traffic = Traffic()
        served = InterceptedConnection(
            interception=self._interception,
            credential=credential,
            open_upstream=open_upstream,
            max_bytes=self._policy.max_bytes,
            connect_timeout_s=self._policy.connect_timeout_s,
            traffic=traffic,
        )
        try:
            async with asyncio.timeout_at(event.deadline):
                await served.serve(client_r, client_w)
        except TimeoutError:
            traffic.reason = f"time cap of {self._policy.max_seconds:g} s reached"
        except (OSError, ValueError) as exc:
            traffic.reason = traffic.reason or f"connection broken: {exc}"
        finally:
            event.bytes_out += traffic.bytes_out
            event.bytes_in += traffic.bytes_in
            event.reason = event.reason or traffic.reason
            event.address = traffic.address or event.address

    async def _connect(
        self, host: str, port: int, event: _Tracked
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve ``host``, check every address, connect to the first; or refuse."""
        try:
            async with asyncio.timeout(self._policy.connect_timeout_s):
                addresses = await self._resolver(host, port)
                if not addresses:
                    raise _Refused(502, f"{host} does not resolve")
                for address in addresses:
                    reason = refusal_for_address(address, self._policy.allow_networks)
                    if reason:
                        raise _Refused(403, f"{host} resolves to a refused address: {reason}")
                event.address = str(addresses[0])
                return await self._connector(addresses[0], port)
        except TimeoutError as exc:
            raise _Refused(504, f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise _Refused(502, f"cannot reach {host}:{port}: {exc.strerror or exc}") from exc

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
        event: _Tracked,
    ) -> None:
        budget = [self._policy.max_bytes - event.bytes_out]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, outbound: bool
        ) -> None:
            while chunk := await source.read(_CHUNK):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    event.reason = f"byte cap of {self._policy.max_bytes} reached"
                    return
                if outbound:
                    event.bytes_out += len(chunk)
                else:
                    event.bytes_in += len(chunk)
                sink.write(chunk)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.write_eof()

        tasks = [
            asyncio.create_task(pump(client_r, upstream_w, outbound=True)),
            asyncio.create_task(pump(upstream_r, client_w, outbound=False)),
        ]
        try:
            async with asyncio.timeout_at(event.deadline):
                # The response ending (or the cap) ends the connection.
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if tasks[1] not in done and not event.reason:
                    await tasks[1]
                for task in pending:
                    task.cancel()
        except TimeoutError:
            event.reason = f"time cap of {self._policy.max_seconds:g} s reached"
        except OSError as exc:
            event.reason = f"connection broken: {exc}"
        finally:
            for task in tasks:
                task.cancel()
            upstream_w.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        body = f"stockade egress proxy: {reason}\n".encode()
        writer.write(
            f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\n"
            f"X-Stockade-Egress: refused\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(OSError):
            await writer.drain()

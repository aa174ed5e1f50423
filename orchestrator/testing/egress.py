"""Egress test helpers: a loopback HTTP origin, a resolver that knows only given
names, and a connector that refuses, before any packet is sent, every address
but loopback. With these, egress tests never reach beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.egress import IPAddress

__all__ = [
    "FixedResolver",
    "LoopbackOnlyConnector",
    "NonLoopbackConnectionError",
    "UnknownNameError",
    "serve_http",
]


class NonLoopbackConnectionError(ConnectionRefusedError):
    """The proxy tried to connect beyond loopback; raised before connecting."""


class UnknownNameError(OSError):
    """The proxy tried to resolve a name the test did not expect it to."""


class FixedResolver:
    """Resolves IP literals and the given names only.

    Any other name raises :class:`UnknownNameError` (the proxy then answers
    502) and is recorded in :attr:`unknown`, which a test asserts is empty.
    """

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self._table = {
            name: [ipaddress.ip_address(address) for address in addresses]
            for name, addresses in (names or {}).items()
        }
        self.unknown: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host not in self._table:
            self.unknown.append(host)
            raise UnknownNameError(f"the proxy tried to resolve {host!r}; it must refuse it first")
        return self._table[host]


class LoopbackOnlyConnector:
    """Connects to loopback addresses only.

    Any other address raises :class:`NonLoopbackConnectionError` before a
    socket is opened and is recorded in :attr:`violations`, which a test
    asserts is empty.
    """

    def __init__(self) -> None:
        self.violations: list[str] = []

    async def __call__(
        self, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not address.is_loopback:
            self.violations.append(f"{address}:{port}")
            raise NonLoopbackConnectionError(f"the proxy tried to connect to {address}:{port}")
        return await asyncio.open_connection(str(address), port)


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 in a thread; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

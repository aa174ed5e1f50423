"""Egress test helpers: a loopback HTTP origin, a resolver that knows only given
names, and a connector that refuses, before any packet is sent, every address
but loopback. With these, egress tests never reach beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.sandbox.egress import IPAddress

__all__ = [
    "FETCH",
    "FixedResolver",
    "HttpApp",
    "HttpRequest",
    "LoopbackOnlyConnector",
    "NonLoopbackConnectionError",
    "UnknownNameError",
    "serve_http",
]


FETCH = """
import sys, urllib.request, urllib.error
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            print(url, response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        print(url, error.code, error.headers.get("X-Stockade-Egress"))
    except OSError as error:
        print(url, "error", error)
"""
"""A program for a sandbox: fetch each URL of its arguments through the proxy (the
runner's ``HTTP_PROXY``), one line per URL: the status and body, the refusal's code and
``X-Stockade-Egress`` header, or the error."""


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


@dataclass(frozen=True, kw_only=True)
class HttpRequest:
    """What a test origin received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes


HttpApp = Callable[[HttpRequest], tuple[int, bytes]]
"""A test origin: request in, status and body out."""


def read_request(handler: BaseHTTPRequestHandler) -> HttpRequest:
    """The request ``handler`` is serving, its body read (``Content-Length`` bytes)."""
    length = int(handler.headers.get("Content-Length") or 0)
    return HttpRequest(
        method=handler.command,
        path=handler.path,
        headers={name.lower(): value for name, value in handler.headers.items()},
        body=handler.rfile.read(length),
    )


def respond(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
) -> None:
    """Answer with ``status``, ``headers``, a ``Content-Length`` and ``body``."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[int]:
    """Run ``server`` in a thread while inside; yields its port, then stops and closes it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _handler(app: HttpApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            status, body = app(read_request(self))
            respond(self, status, body, {})

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def serve_http(app: HttpApp) -> Iterator[int]:
    """An HTTP origin on 127.0.0.1 in a thread, answering with ``app``; yields its port."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(app))) as port:
        yield port

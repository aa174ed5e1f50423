"""Serving the metrics: the exposition, a small HTTP endpoint, an ASGI app, discovery files.

Several processes: each long-running Stockade process (``stockade run``, the
demo, the HTTP server) keeps its own registry in memory and serves it on its
own ``/metrics``; Prometheus scrapes every process as its own target, and every
dashboard query and alert aggregates over processes with ``sum by (…)``. This
was chosen over prometheus-client's multiprocess mode, which swaps every value
for a per-process memory-mapped file chosen by an environment variable at
import time (a process-wide global: two platforms in one process would share
values), makes each update a locked file write, and cannot report the pools
and approvals read at scrape time. A process that ends takes its series with
it; Prometheus' ``rate`` treats that as the counter's end, so sums stay right.

So that nobody lists ports by hand, a serving process writes a discovery
file (Prometheus' ``file_sd_configs`` format) into a directory shared by the
host's processes (``metrics/targets`` in the state directory) and removes it
when it stops; files of processes that died without removing theirs are
pruned by the next one to start, and ignored by :func:`live_targets`.
Short-lived commands (``stockade tools call``) serve nothing: their calls are
in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.exposition import choose_encoder

from orchestrator.errors import ConfigError
from orchestrator.metrics._metrics import Metrics

__all__ = ["MetricsEndpoint", "live_targets", "metrics_app", "render", "serve_metrics"]

_log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
_REQUEST_LIMIT = 16 * 1024
_READ_TIMEOUT_S = 10.0
_TARGET_FILE = re.compile(r"^(\d+)-(\d+)\.json$")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def render(metrics: Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of ``metrics`` and its content type.

    Prometheus' text format, or OpenMetrics when ``accept`` (the request's
    ``Accept`` header) asks for it. Takes a few milliseconds for the platform's
    ~1 000 series: call it off the event loop (the endpoints here do).
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(metrics.registry), content_type


def metrics_app(metrics: Metrics | Callable[[], Metrics]) -> ASGIApp:
    """An ASGI application answering ``GET`` with the exposition of ``metrics``.

    ``metrics`` may be a function returning it (the HTTP server's platform
    opens after the app is built). Mount it, e.g. ``app.mount("/metrics",
    metrics_app(lambda: state.platform.metrics))``; it answers every path it
    is mounted at.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _asgi_reply(send, 405, b"only GET\n", "text/plain", allow=True)
            return
        accept = ""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"accept":
                accept = value.decode("latin-1")
        source = metrics if isinstance(metrics, Metrics) else metrics()
        body, content_type = await asyncio.to_thread(render, source, accept)
        await _asgi_reply(send, 200, b"" if method == "HEAD" else body, content_type)

    return app


async def _asgi_reply(
    send: Send, status: int, body: bytes, content_type: str, *, allow: bool = False
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, kw_only=True)
class MetricsEndpoint:
    """A running ``/metrics`` endpoint."""

    host: str
    """The address it listens on."""
    port: int
    """The port it listens on (the one chosen, when 0 was asked for)."""
    target_file: Path | None
    """Its discovery file, while it runs."""

    @property
    def url(self) -> str:
        """Where to scrape it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: Metrics,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    targets_dir: Path | None = None,
    labels: Mapping[str, str] | None = None,
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``/metrics`` on ``host:port`` (0: any free port) while the block runs.

    ``targets_dir`` gets a discovery file naming this endpoint, with ``labels``
    (e.g. ``{"command": "run"}``), removed when the block ends. Raises
    :class:`~orchestrator.errors.ConfigError` when the address cannot be used.
    """
    if not metrics.enabled:
        raise ConfigError("metrics are off, so there is nothing to serve", field="metrics.enabled")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(metrics, reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent garbage gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=_REQUEST_LIMIT)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
            "port (--metrics-port 0 takes any free one)",
            field="metrics.port",
        ) from exc
    bound = server.sockets[0].getsockname()[1]
    target = None
    try:
        if targets_dir is not None:
            target = await asyncio.to_thread(_register, targets_dir, host, bound, labels or {})
        endpoint = MetricsEndpoint(host=host, port=bound, target_file=target)
        _log.info("serving metrics at %s", endpoint.url)
        yield endpoint
    finally:
        server.close()
        await server.wait_closed()
        if target is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(target.unlink)


async def _answer(
    metrics: Metrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One request, one response (``Connection: close``): all Prometheus needs."""
    async with asyncio.timeout(_READ_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        await _reply(writer, 400, b"bad request\n", "text/plain")
        return
    method, target, _version = parts
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if target.split("?", 1)[0] != METRICS_PATH:
        await _reply(writer, 404, b"see /metrics\n", "text/plain")
        return
    if method not in ("GET", "HEAD"):
        await _reply(writer, 405, b"only GET\n", "text/plain")
        return
    body, content_type = await asyncio.to_thread(render, metrics, headers.get("accept"))
    await _reply(writer, 200, body, content_type, head_only=method == "HEAD")


async def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    *,
    head_only: bool = False,
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    writer.write(head.encode() + b"\r\n" + (b"" if head_only else body))
    await writer.drain()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def _register(directory: Path, host: str, port: int, labels: Mapping[str, str]) -> Path:
    """Write this endpoint's discovery file (atomically), pruning those of dead processes."""
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)  # the state directory's own modes
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir()
            # Open to Prometheus whatever the umask (one the operator made keeps its
            # mode): it holds addresses and labels, nothing secret.
            directory.chmod(0o755)
    for path in directory.glob("*.json"):
        match = _TARGET_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    document = [{"targets": [address], "labels": dict(labels)}]
    path = directory / f"{os.getpid()}-{port}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.chmod(0o644)  # likewise
    # Prometheus may read the file at any moment: it sees it whole or not at all.
    partial.replace(path)
    return path


def live_targets(directory: Path) -> list[str]:
    """The ``/metrics`` URLs of this host's serving processes that are still alive."""
    urls: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        match = _TARGET_FILE.match(path.name)
        if not match or not _alive(int(match.group(1))):
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for group in document if isinstance(document, list) else []:
            urls.extend(f"http://{address}{METRICS_PATH}" for address in group.get("targets", []))
    return urls

"""In-container egress forwarder: a TCP proxy port on loopback, relayed to a Unix socket.

Sandboxes have no network interface, only loopback. Ordinary HTTP clients
want a proxy at ``host:port``; this forwarder listens on ``127.0.0.1:PORT``
inside the container and relays every connection, byte for byte, to the
orchestrator's egress proxy on the mounted Unix socket, which decides. It
enforces nothing itself: everything inside the sandbox is untrusted anyway.
Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["start_forwarder"]

_CHUNK = 64 * 1024


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(_CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def start_forwarder(socket_path: str, port: int = 0) -> tuple[socket.socket, int]:
    """Listen on 127.0.0.1:``port`` (0: any free port) and relay in daemon threads.

    Returns the listening socket (close it to stop accepting) and its port.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def accept_loop() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            threading.Thread(target=_serve_one, args=(client, socket_path), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener, int(listener.getsockname()[1])

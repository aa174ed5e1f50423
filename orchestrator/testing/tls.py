"""A loopback HTTPS origin with its own certificate, for testing credential injection.

The origin listens on 127.0.0.1, presents a self-signed certificate for the
names it is given (which a :class:`~orchestrator.testing.FixedResolver` maps
to 127.0.0.1), keeps connections alive (HTTP/1.1) and records every request
and connection, so a test can check which headers arrived and whether the
egress proxy reused its upstream connection. :meth:`TlsOrigin.client_context`
is a TLS context trusting exactly this origin: the proxy's upstream context in
a test.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.testing.egress import HttpRequest, read_request, respond, serving

__all__ = ["TlsApp", "TlsOrigin"]

TlsApp = Callable[[HttpRequest], tuple[int, dict[str, str], bytes] | None]
"""The origin's behaviour: request in, status, headers and body out; None hangs up without
an answer (a server that took the request, then closed the connection)."""


def _self_signed(names: Sequence[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


class TlsOrigin:
    """An HTTPS server on 127.0.0.1 for ``names``, answering with ``app``."""

    def __init__(self, names: Sequence[str], app: TlsApp) -> None:
        self.names = tuple(names)
        self.app = app
        self.certificate_pem, self._key_pem = _self_signed(self.names)
        self.requests: list[HttpRequest] = []
        self.connections = 0
        self._lock = threading.Lock()

    @property
    def certificate_sha256(self) -> str:
        """SHA-256 of the certificate's DER: what a client that saw it can compare."""
        der = ssl.PEM_cert_to_DER_cert(self.certificate_pem.decode())
        return hashlib.sha256(der).hexdigest()

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this origin's certificate, and only it."""
        context = ssl.create_default_context(cadata=self.certificate_pem.decode())
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _server_context(self, directory: Path) -> ssl.SSLContext:
        material = directory / "origin.pem"
        material.write_bytes(self.certificate_pem + self._key_pem)
        material.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(material)
        return context

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so the proxy may reuse a connection
            # One write per response (flushed after each request): a head and a body
            # written apart would meet Nagle and delayed ACKs, 40 ms a response.
            wbufsize = 64 * 1024

            def setup(self) -> None:
                with origin._lock:
                    origin.connections += 1
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().setup()

            def _serve(self) -> None:
                request = read_request(self)
                with origin._lock:
                    origin.requests.append(request)
                answer = origin.app(request)
                if answer is None:
                    self.close_connection = True
                    return
                status, headers, body = answer
                respond(self, status, body, headers)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    @contextmanager
    def serve(self, port: int = 0) -> Iterator[int]:
        """Serve on ``port`` (0: any free one) in a thread; yields the port.

        May be entered more than once (e.g. in two network namespaces): every
        server records into the same :attr:`requests`.
        """
        with tempfile.TemporaryDirectory(prefix="stockade-origin-") as directory:
            context = self._server_context(Path(directory))
            server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
            server.daemon_threads = True
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            with serving(server) as bound:
                yield bound

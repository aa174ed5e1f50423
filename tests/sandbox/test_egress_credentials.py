"""Credentials added by the egress proxy: terminated TLS for bound hosts only, redacted echoes.

The origin is an HTTPS server on 127.0.0.1 with its own certificate; the
proxy's resolver maps the test names to it and its connector dials loopback
only. The client here is ordinary Python (``http.client`` over a tunnel),
trusting the deployment CA the gate writes beside its socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from orchestrator.sandbox._egress_gate import (
    CA_BUNDLE_NAME,
    CA_NAME,
    SOCKET_NAME,
    EgressGate,
    EgressGates,
)
from orchestrator.sandbox._egress_redact import StreamRedactor, secret_forms
from orchestrator.sandbox._egress_tls import Interception, UpstreamPool
from orchestrator.sandbox.credentials import Credential, CredentialBinding, CredentialBindings
from orchestrator.sandbox.egress import EgressPolicy, EgressProxy
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.testing import FixedResolver, LoopbackOnlyConnector
from orchestrator.testing.egress import HttpRequest
from orchestrator.testing.tls import TlsOrigin

CANARY = "CANARY-7f3a9c2e/b+x=QZ"
BOUND, UNBOUND = "bound.test", "unbound.test"


def origin_app(port_box: list[int]) -> object:
    def app(request: HttpRequest) -> tuple[int, dict[str, str], bytes] | None:
        if request.path == "/hang-up":
            return None  # took the request, answered nothing, closed the connection
        if request.path.startswith("/echo"):
            # Everything received, in the forms a server might reflect it.
            received = json.dumps(request.headers).encode()
            auth = request.headers.get("authorization", "").encode()
            body = b"\n".join(
                [received, base64.b64encode(auth), base64.b64encode(b"x" + auth),
                 quote(auth.decode(), safe="").encode(), quote(auth.decode()).encode(),
                 auth * 3]
            )  # fmt: skip
            return 200, {"X-Echo": request.headers.get("authorization", "")}, body
        if request.path == "/redirect":
            return 302, {"Location": f"https://{UNBOUND}:{port_box[0]}/echo"}, b""
        if request.path == "/broken":
            # A header h11 refuses, on a line that also reflects the credential.
            reflected = request.headers.get("authorization", "")
            return 302, {"Location": f"/next?auth={reflected}&bad=\0"}, b""
        if request.path == "/gzip":
            return 200, {"Content-Encoding": "gzip"}, b"\x1f\x8b not really"
        return 200, {}, b"hello " + request.path.encode()

    return app


@dataclass
class Setup:
    gate: EgressGate
    gates: EgressGates
    origin: TlsOrigin
    port: int
    ca: DeploymentCA

    def gates_pool(self) -> UpstreamPool:
        interception = self.gates._interception
        assert interception is not None
        return interception.pool

    def socket_path(self) -> str:
        return str(self.gate.directory / SOCKET_NAME)

    def sandbox_context(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            return ssl._create_unverified_context()
        return ssl.create_default_context(cafile=str(self.gate.directory / CA_BUNDLE_NAME))

    def tunnel(self, host: str, *, sni: str | None = None, verify: bool = True) -> ssl.SSLSocket:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(10)
        raw.connect(self.socket_path())
        raw.sendall(f"CONNECT {host}:{self.port} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(1)
            if not chunk:
                raise ConnectionError(head.decode())
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        return self.sandbox_context(verify).wrap_socket(raw, server_hostname=sni or host)

    def get(
        self,
        host: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        host_header: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(host, self.port, timeout=10)
        connection.sock = self.tunnel(host)
        sent = {"Host": host_header or f"{host}:{self.port}", **(headers or {})}
        connection.request("GET", path, headers=sent)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture
def origin() -> Iterator[tuple[TlsOrigin, int]]:
    port_box: list[int] = []
    server = TlsOrigin([BOUND, UNBOUND], origin_app(port_box))  # type: ignore[arg-type]
    with server.serve() as port:
        port_box.append(port)
        yield server, port


@contextlib.asynccontextmanager
async def open_setup(
    state: Path,
    gates_root: Path,
    origin: tuple[TlsOrigin, int],
    *,
    system_trust: bool = False,
    upstream_ca: bytes | None = None,
) -> AsyncIterator[Setup]:
    """A gate for profile ``web`` armed with the canary for ``BOUND``. Its proxy trusts the
    origin upstream, unless ``system_trust`` (the system's store, as a deployment's proxy
    does); ``upstream_ca`` is the credential's own CA bundle."""
    server, port = origin
    ca = DeploymentCA.open(state, [BOUND])
    resolver = FixedResolver({BOUND: ["127.0.0.1"], UNBOUND: ["127.0.0.1"]})
    connector = LoopbackOnlyConnector()
    interception = (
        Interception(ca=ca, profiles=frozenset({"web"}))
        if system_trust
        else Interception(ca=ca, profiles=frozenset({"web"}), upstream_tls=server.client_context())
    )
    gates = EgressGates(
        gates_root, resolver=resolver, connector=connector, interception=interception
    )
    policy = EgressPolicy(
        allow=(f"{BOUND}:{port}", f"{UNBOUND}:{port}"),
        allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    gate = await gates.open(policy, profile="web")
    credential = Credential(
        name="canary", host=BOUND, port=port, header="Authorization",
        template="Bearer {secret}", value=CANARY, upstream_ca=upstream_ca,
    )  # fmt: skip
    gate.arm((credential,))
    yield Setup(gate=gate, gates=gates, origin=server, port=port, ca=ca)
    await gate.close()
    await gates.close()
    assert connector.violations == [] and resolver.unknown == []


@pytest.fixture
async def setup(
    tmp_path: Path, gates_root: Path, origin: tuple[TlsOrigin, int]
) -> AsyncIterator[Setup]:
    async with open_setup(tmp_path / "state", gates_root, origin) as opened:
        yield opened


async def test_a_binding_with_its_own_ca_is_trusted_for_that_host_only(
    tmp_path: Path, gates_root: Path, origin: tuple[TlsOrigin, int]
) -> None:
    # The proxy trusts the system's store, where the origin's certificate is not:
    # the binding's CA bundle (its ca_file) is what lets the proxy reach it.
    server, _ = origin
    trusted = server.certificate_pem
    async with open_setup(tmp_path / "a", gates_root, origin, system_trust=True) as plain:
        status, _, body = await asyncio.to_thread(plain.get, BOUND, "/echo")
    assert status == 502 and b"TLS with bound.test failed" in body, (status, body)
    async with open_setup(
        tmp_path / "b", gates_root, origin, system_trust=True, upstream_ca=trusted
    ) as own:
        status, headers, _ = await asyncio.to_thread(own.get, BOUND, "/echo")
    assert status == 200 and headers["x-echo"] == "Bearer [REDACTED]", (status, headers)


async def test_the_bound_host_gets_the_header_and_the_sandbox_never_sees_it(setup: Setup) -> None:
    status, headers, body = await asyncio.to_thread(
        setup.get,
        BOUND,
        "/echo",
        headers={"Authorization": "Bearer forged", "Accept-Encoding": "gzip"},
    )
    assert status == 200
    (received,) = setup.origin.requests
    assert received.headers["authorization"] == f"Bearer {CANARY}"
    assert received.headers["accept-encoding"] == "identity", "asked uncompressed"
    assert "proxy-connection" not in received.headers
    # The echo holds it literally, base64 (two alignments), URL-encoded and repeated:
    # the sandbox reads none of them, in the body or the headers.
    assert CANARY.encode() not in body and b"forged" not in body
    for form in secret_forms(CANARY):
        assert form not in body
    assert quote(CANARY).encode() not in body, "URL-encoded keeping '/', as quote() does"
    assert headers["x-echo"] == "Bearer [REDACTED]"
    assert body.count(b"[REDACTED]") >= 6
    (event,) = await setup.gate.settle()
    assert event.allowed and event.secret == "canary" and event.host == BOUND
    assert CANARY not in event.model_dump_json()
    assert event.bytes_in > 0 and event.bytes_out > 0


async def test_the_sni_must_name_the_bound_host(setup: Setup) -> None:
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(setup.tunnel, BOUND, sni=UNBOUND)
    (event,) = await setup.gate.settle()
    assert "SNI must name" in event.reason
    assert setup.origin.requests == []


async def test_the_host_header_must_name_the_bound_host(setup: Setup) -> None:
    status, headers, body = await asyncio.to_thread(
        setup.get, BOUND, "/echo", host_header=f"{UNBOUND}:{setup.port}"
    )
    assert status == 421 and headers["x-stockade-egress"] == "refused"
    assert b"Host must name bound.test" in body
    assert setup.origin.requests == []


async def test_an_unbound_host_keeps_the_opaque_tunnel(setup: Setup) -> None:
    def peer_certificate() -> str:
        with setup.tunnel(UNBOUND, verify=False) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return hashlib.sha256(der).hexdigest()

    assert await asyncio.to_thread(peer_certificate) == setup.origin.certificate_sha256
    # And a request through it carries no credential, even naming the bound host.
    status, _, _body = await asyncio.to_thread(
        _tunnelled_get, setup, UNBOUND, host_header=f"{BOUND}:{setup.port}"
    )
    assert status == 200
    assert all("authorization" not in request.headers for request in setup.origin.requests)
    events = await setup.gate.settle()
    assert all(event.secret is None for event in events)


def _tunnelled_get(
    setup: Setup, host: str, *, host_header: str
) -> tuple[int, dict[str, str], bytes]:
    """A GET through a tunnel to ``host`` trusting the origin itself (not the proxy's CA)."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(setup.socket_path())
    raw.sendall(f"CONNECT {host}:{setup.port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    tls = setup.origin.client_context().wrap_socket(raw, server_hostname=host)
    connection = http.client.HTTPConnection(host, setup.port, timeout=10)
    connection.sock = tls
    connection.request("GET", "/echo", headers={"Host": host_header})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


async def test_no_header_on_a_redirect_to_another_host(setup: Setup) -> None:
    status, headers, _ = await asyncio.to_thread(setup.get, BOUND, "/redirect")
    assert status == 302
    location = headers["location"]
    assert location.startswith(f"https://{UNBOUND}:")
    status, _, body = await asyncio.to_thread(
        _tunnelled_get, setup, UNBOUND, host_header=f"{UNBOUND}:{setup.port}"
    )
    assert status == 200 and CANARY.encode() not in body
    redirect, followed = setup.origin.requests
    assert redirect.headers["authorization"] == f"Bearer {CANARY}"
    assert "authorization" not in followed.headers


async def test_a_compressed_response_is_refused(setup: Setup) -> None:
    status, _headers, body = await asyncio.to_thread(setup.get, BOUND, "/gzip")
    assert status == 502 and b"compressed" in body


async def test_an_error_quoting_the_response_is_redacted_too(setup: Setup) -> None:
    """h11 quotes the line it refuses; the refusal the sandbox reads, and the event the
    audit log keeps, must not carry the secret that line reflected."""
    status, _headers, body = await asyncio.to_thread(setup.get, BOUND, "/broken")
    assert status == 502 and b"illegal header line" in body, body
    assert CANARY.encode() not in body and b"[REDACTED]" in body
    (event,) = await setup.gate.settle()
    assert "illegal header line" in event.reason
    assert CANARY not in event.model_dump_json()


@contextlib.asynccontextmanager
async def another_gate(setup: Setup, **policy: Any) -> AsyncIterator[Setup]:
    """A second gate of the same gates (so the same upstream pool), armed like the first."""
    gate = await setup.gates.open(
        EgressPolicy(
            allow=(f"{BOUND}:{setup.port}",),
            allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
            **policy,
        ),
        profile="web",
    )
    try:
        gate.arm(
            (Credential(name="canary", host=BOUND, port=setup.port, header="Authorization",
                        template="Bearer {secret}", value=CANARY),)
        )  # fmt: skip
        yield Setup(gate=gate, gates=setup.gates, origin=setup.origin, port=setup.port, ca=setup.ca)
    finally:
        await gate.close()


async def test_upstream_connections_are_reused_across_gates(setup: Setup) -> None:
    for _ in range(3):
        assert (await asyncio.to_thread(setup.get, BOUND, "/x"))[0] == 200
    async with another_gate(setup) as second:
        assert (await asyncio.to_thread(second.get, BOUND, "/y"))[0] == 200
    assert len(setup.origin.requests) == 4
    assert setup.origin.connections == 1, "one upstream TLS connection for four requests"


async def test_a_request_cut_short_closes_the_pooled_connection_it_took(setup: Setup) -> None:
    """A connection taken from the pool for a request that then fails (here: the byte cap,
    reached by the head after the body) is closed, not left open outside the pool."""
    assert (await asyncio.to_thread(setup.get, BOUND, "/x"))[0] == 200
    (pooled,) = [upstream for idle in setup.gates_pool()._idle.values() for upstream in idle]
    async with another_gate(setup, max_bytes=1000) as capped:

        def post() -> bytes:
            connection = http.client.HTTPConnection(BOUND, setup.port, timeout=10)
            connection.sock = capped.tunnel(BOUND)
            connection.request("POST", "/x", body=b"b" * 990)
            try:
                return connection.getresponse().read()
            except (http.client.HTTPException, OSError) as exc:
                return repr(exc).encode()
            finally:
                connection.close()

        await asyncio.to_thread(post)
        (event,) = await capped.gate.settle()
        assert "byte cap" in event.reason
    assert pooled.writer.is_closing(), "the pooled connection was left open, out of the pool"


@pytest.mark.parametrize(("method", "sent"), [("POST", 1), ("GET", 2)])
async def test_a_request_a_pooled_connection_lost_is_sent_again_only_if_idempotent(
    setup: Setup, method: str, sent: int
) -> None:
    """A pooled connection that fails before the answer may have delivered the request: a
    POST sent again on a fresh connection could act twice (the origin saw it twice)."""
    assert (await asyncio.to_thread(setup.get, BOUND, "/warm"))[0] == 200  # one in the pool

    def send() -> int:
        connection = http.client.HTTPConnection(BOUND, setup.port, timeout=10)
        connection.sock = setup.tunnel(BOUND)
        connection.request(method, "/hang-up", body=b"pay" if method == "POST" else None)
        try:
            return connection.getresponse().status
        finally:
            connection.close()

    status = await asyncio.to_thread(send)
    assert status == 502
    assert [r.path for r in setup.origin.requests].count("/hang-up") == sent


async def test_the_gate_mounts_the_ca_and_names_it_in_the_environment(setup: Setup) -> None:
    directory = setup.gate.directory
    assert (directory / CA_NAME).read_bytes() == setup.ca.certificate_pem
    assert (directory / CA_BUNDLE_NAME).read_bytes().endswith(setup.ca.certificate_pem)
    assert setup.gate.environment == {
        "SSL_CERT_FILE": "/run/stockade/ca-bundle.pem",
        "REQUESTS_CA_BUNDLE": "/run/stockade/ca-bundle.pem",
        "CURL_CA_BUNDLE": "/run/stockade/ca-bundle.pem",
        "NODE_EXTRA_CA_CERTS": "/run/stockade/ca.pem",
    }
    other = await setup.gates.open(EgressPolicy(), profile="no-credentials")
    try:
        assert other.environment == {} and not (other.directory / CA_NAME).exists()
    finally:
        await other.close()


def test_the_ca_is_name_constrained_private_and_kept(tmp_path: Path) -> None:
    from cryptography import x509

    ca = DeploymentCA.open(tmp_path, ["api.example.org", "bound.test"])
    key = tmp_path / "egress-ca" / "ca-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "egress-ca").stat().st_mode & 0o777 == 0o700
    certificate = x509.load_pem_x509_certificate(ca.certificate_pem)
    constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert {n.value for n in constraints.value.permitted_subtrees or ()} == {
        "api.example.org",
        "bound.test",
    }
    again = DeploymentCA.open(tmp_path, ["bound.test", "api.example.org"])
    assert again.certificate_pem == ca.certificate_pem, "the same hosts keep the same CA"
    other = DeploymentCA.open(tmp_path, ["bound.test"])
    assert other.certificate_pem != ca.certificate_pem, "other hosts, a new CA"
    with pytest.raises(ValueError, match="not constrained"):
        other.server_context("evil.test")


def test_a_leaf_outside_the_constraints_is_refused_by_clients(tmp_path: Path) -> None:
    # Even a leaf the CA's key signed for another name fails verification.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    DeploymentCA.open(tmp_path, ["bound.test"])
    ca_key = serialization.load_pem_private_key(
        (tmp_path / "egress-ca" / "ca-key.pem").read_bytes(), None
    )
    ca_cert = x509.load_pem_x509_certificate((tmp_path / "egress-ca" / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.test")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.test")]), False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    store = x509.verification.Store([ca_cert])
    verifier = (
        x509.verification.PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.DNSName("evil.test"))
    )
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(leaf, [])


def test_arming_without_interception_is_refused() -> None:
    proxy = EgressProxy(EgressPolicy())
    credential = Credential(
        name="x", host="a.test", port=443, header="A", template="{secret}", value="12345678"
    )
    with pytest.raises(ValueError, match="no TLS interception"):
        proxy.arm((credential,))
    assert "12345678" not in repr(credential)


def test_bindings_pick_by_profile_and_principal() -> None:
    def credential(name: str, host: str) -> Credential:
        return Credential(
            name=name, host=host, port=443, header="A", template="{secret}", value="v" * 8
        )

    bindings = CredentialBindings(
        [
            CredentialBinding(
                profile="http", credential=credential("team", "a.test"), principals=("team-*",)
            ),
            CredentialBinding(profile="http", credential=credential("all", "a.test")),
            CredentialBinding(profile="http", credential=credential("b", "b.test")),
            CredentialBinding(profile="other", credential=credential("c", "c.test")),
        ]
    )
    assert [c.name for c in bindings.for_call("http", "team-x")] == ["team", "b"]
    assert [c.name for c in bindings.for_call("http", "bob")] == ["all", "b"]
    assert [c.name for c in bindings.for_call("http", None)] == ["all", "b"]
    assert bindings.for_call("default", "team-x") == ()
    assert bindings.hosts == ("a.test", "b.test", "c.test")
    assert bindings.profiles == {"http", "other"}


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 11, 64])
def test_redaction_across_chunk_boundaries(cut: int) -> None:
    secret = "s3cr3t/with+odd=chars"
    data = (
        b"head " + secret.encode() + b" mid " + base64.b64encode(b"zz" + secret.encode())
        + b" " + quote(secret, safe="").encode() + b" " + base64.urlsafe_b64encode(secret.encode())
        + b" " + quote(secret, safe="").lower().encode() + b" tail"
    )  # fmt: skip
    redactor = StreamRedactor([secret])
    out = b"".join(redactor.feed(data[i : i + cut]) for i in range(0, len(data), cut))
    out += redactor.finish()
    assert out == StreamRedactor([secret]).redact(data)
    for form in secret_forms(secret):
        assert form not in out
    assert out.startswith(b"head [REDACTED] mid ") and out.endswith(b" tail")


@pytest.mark.parametrize(
    "encode",
    [
        quote,  # Python's default keeps "/"
        lambda text: quote(text, safe="/+="),  # JavaScript's encodeURI keeps these
        lambda text: quote(text, safe="!*'()~"),  # encodeURIComponent keeps these
        lambda text: quote_plus(text, safe="").replace("~", "%7E"),  # PHP's urlencode
        lambda text: re.sub("%[0-9A-F]{2}", lambda hexed: hexed[0].lower(), quote(text)),
    ],
    ids=["quote", "encodeURI", "encodeURIComponent", "php-urlencode", "lower-hex"],
)
@pytest.mark.parametrize("secret", ["CANARY-7f3a9c2e/b+x=QZ", "tok!en/(a~b) c"])
def test_redaction_of_any_url_encoding(encode: Callable[[str], str], secret: str) -> None:
    """Encoders differ in what they leave alone: each leaves a form of its own."""
    data = b"before " + encode(secret).encode() + b" after"
    assert StreamRedactor([secret]).redact(data) == b"before [REDACTED] after"
    for cut in (1, 4, 9):
        redactor = StreamRedactor([secret])
        out = b"".join(redactor.feed(data[i : i + cut]) for i in range(0, len(data), cut))
        assert out + redactor.finish() == b"before [REDACTED] after", cut


def test_secrets_are_checked_against_profiles_and_read_at_start(tmp_path: Path) -> None:
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError
    from orchestrator.platform import load_credentials

    def config(secrets: str) -> Path:
        path = tmp_path / "stockade.yaml"
        path.write_text(
            "sandbox:\n  profiles:\n    http:\n      loosen: [egress]\n"
            "      egress: {allow: [api.example.org]}\n" + secrets
        )
        return path

    outside = config(
        "secrets:\n  t:\n    env: T\n    bind:\n      - {profile: http, host: x.example.org}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(outside, environ={})
    assert str(raised.value).startswith(
        f"{outside}:10: secrets.t.bind[0].host: x.example.org:443 is not"
    )
    unknown = config(
        "secrets:\n  t:\n    env: T\n    bind: [{profile: gpu, host: api.example.org}]\n"
    )
    with pytest.raises(ConfigError, match=r"secrets.t.bind\[0\].profile: profile 'gpu' is not"):
        load_config(unknown, environ={})
    both = config(
        "secrets:\n  t:\n    env: T\n    file: t.txt\n    bind: [{profile: http, host: api.example.org}]\n"
    )
    with pytest.raises(ConfigError, match="exactly one of env or file"):
        load_config(both, environ={})

    from_file = config(
        "secrets:\n  t:\n    file: token.txt\n    bind: [{profile: http, host: api.example.org}]\n"
    )
    (tmp_path / "token.txt").write_text("short\n")
    loaded = load_config(from_file, environ={})
    with pytest.raises(ConfigError) as raised:
        load_credentials(loaded)
    assert "secrets.t.file: the secret must be one line of at least 8 characters" in str(
        raised.value
    )
    assert "short" not in str(raised.value), "an error never shows the secret"
    (tmp_path / "token.txt").write_text("a-long-enough-token\n")
    (credential,) = load_credentials(loaded).for_call("http", "ada")
    assert credential.header_value() == "Bearer a-long-enough-token"
    assert "a-long-enough-token" not in repr(credential)

    from_env = config(
        "secrets:\n  t:\n    env: THE_TOKEN\n    bind: [{profile: http, host: api.example.org}]\n"
    )
    with pytest.raises(
        ConfigError, match=r"secrets\.t\.env: the environment variable THE_TOKEN is not set"
    ):
        load_credentials(load_config(from_env, environ={}), environ={})
    (credential,) = load_credentials(
        load_config(from_env, environ={}), environ={"THE_TOKEN": "0123456789"}
    ).for_call("http", None)
    assert credential.value == "0123456789"


def test_a_bindings_ca_file_is_read_at_start_beside_the_config(
    tmp_path: Path, origin: tuple[TlsOrigin, int]
) -> None:
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError
    from orchestrator.platform import load_credentials

    config = tmp_path / "stockade.yaml"
    config.write_text(
        "sandbox:\n  profiles:\n    http:\n      loosen: [egress]\n"
        "      egress: {allow: [api.corp.example, api.example.org]}\n"
        "secrets:\n  t:\n    env: T\n    bind:\n"
        "      - {profile: http, host: api.corp.example, ca_file: certs/corp.pem}\n"
        "      - {profile: http, host: api.example.org}\n"
    )
    loaded = load_config(config, environ={})
    environ = {"T": "a-long-enough-token"}
    with pytest.raises(ConfigError) as raised:
        load_credentials(loaded, environ=environ)
    where = tmp_path / "certs" / "corp.pem"
    assert str(raised.value).startswith(f"{config}:9: secrets.t.bind[0].ca_file: {where} must"), (
        "relative to the configuration file; the file, line and field named"
    )
    where.parent.mkdir()
    where.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"bind\[0\]\.ca_file: .* must hold the PEM certificates"):
        load_credentials(loaded, environ=environ)
    where.write_bytes(origin[0].certificate_pem)
    corp, public = load_credentials(loaded, environ=environ).for_call("http", None)
    assert corp.upstream_ca == origin[0].certificate_pem and public.upstream_ca is None


def test_secrets_load_on_the_ray_engine_too(tmp_path: Path) -> None:
    """The Ray engine's hosts add credentials (sealed to them per call, see
    tests/cluster/test_ray_egress.py): a binding loads as with the docker engine."""
    from orchestrator.config import load_config
    from orchestrator.platform import load_credentials

    path = tmp_path / "stockade.yaml"
    path.write_text(
        "sandbox:\n  engine: ray\n  ray: {address: '127.0.0.1:6379'}\n"
        "  profiles:\n    http:\n      loosen: [egress]\n"
        "      egress: {allow: [api.example.org]}\n"
        "secrets:\n  t:\n    env: T\n    bind:\n      - {profile: http, host: api.example.org}\n"
    )
    bindings = load_credentials(load_config(path, environ={}), environ={"T": "0123456789"})
    (credential,) = bindings.for_call("http", None)
    assert (credential.name, credential.host, credential.port) == ("t", "api.example.org", 443)
    assert bindings.profiles == frozenset({"http"})

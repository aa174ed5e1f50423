"""Credentials on their way to a Ray host: sealed to one host and one orchestrator, and
the leaves a host serves from them (the host never holds the CA's key)."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest

from orchestrator.sandbox._host_credentials import CallCredentials, HostCA, SealingKey, seal
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.testing.tls import TlsOrigin

SECRET = "sk-sealed-0123456789"


def _credential(host: str = "bound.test") -> Credential:
    return Credential(
        name="api", host=host, port=443, header="Authorization", template="Bearer {secret}",
        value=SECRET,
    )  # fmt: skip


def test_sealed_credentials_open_only_on_their_host_for_their_orchestrator() -> None:
    key = SealingKey()
    sealed = seal(key.public, b"payload", host="host-a", orchestrator="o1")
    assert b"payload" not in sealed
    assert key.open(sealed, host="host-a", orchestrator="o1") == b"payload"
    # Two seals of one payload differ (a fresh ephemeral key each time).
    assert seal(key.public, b"payload", host="host-a", orchestrator="o1") != sealed
    for host, orchestrator in (("host-b", "o1"), ("host-a", "o2")):
        with pytest.raises(ValueError, match="do not open with this host's key"):
            key.open(sealed, host=host, orchestrator=orchestrator)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(ValueError, match="do not open"):
        key.open(bytes(tampered), host="host-a", orchestrator="o1")
    with pytest.raises(ValueError, match="do not open"):
        SealingKey().open(sealed, host="host-a", orchestrator="o1")  # a restarted host
    with pytest.raises(ValueError, match="no usable sealing key"):
        seal("not base64!", b"payload", host="host-a", orchestrator="o1")
    with pytest.raises(ValueError, match="no usable sealing key"):
        seal("AAAA", b"payload", host="host-a", orchestrator="o1")  # 3 bytes, not 32


def test_call_credentials_round_trip_and_refuse_what_they_cannot_serve() -> None:
    bound = CallCredentials([_credential()], {"bound.test": b"-----PEM-----\n"})
    back = CallCredentials.decode(bound.encode())
    assert back.credentials == bound.credentials
    assert back.credentials[0].header_value() == f"Bearer {SECRET}"
    assert back.leaves == {"bound.test": b"-----PEM-----\n"}
    assert SECRET not in repr(back.credentials)
    # A binding's own CA bundle (its ca_file) travels with its credential.
    corp = Credential(
        name="corp", host="api.corp.test", port=8443, header="X-Key", template="{secret}",
        value=SECRET, upstream_ca=b"-----CA-----\n",
    )  # fmt: skip
    both = CallCredentials([_credential(), corp], {"bound.test": b"a", "api.corp.test": b"b"})
    assert CallCredentials.decode(both.encode()).credentials == (_credential(), corp)
    with pytest.raises(ValueError, match=r"no leaf for bound\.test"):
        CallCredentials([_credential()], {})
    for garbage in (b"", b"[]", b'{"credentials": [{}], "leaves": {}}', b"\xff"):
        with pytest.raises(ValueError, match="malformed call credentials"):
            CallCredentials.decode(garbage)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> bytes:
    """A TLS handshake in memory; the certificate the client saw (DER)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=name)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (tls_client, tls_server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        try:
            seen = tls_client.getpeercert(binary_form=True)
        except ValueError:
            continue
        if seen:
            return seen
    raise AssertionError("the handshake did not finish")


def test_a_host_serves_the_leaves_a_call_brings_under_the_registered_ca(tmp_path: Path) -> None:
    ca = DeploymentCA.open(tmp_path, ["bound.test"])
    host_ca = HostCA(ca.certificate_pem)
    assert host_ca.hosts == frozenset({"bound.test"})
    assert host_ca.trust_bundle().endswith(ca.certificate_pem)
    with pytest.raises(ValueError, match="no leaf"):
        host_ca.server_context("bound.test")
    leaf = ca.leaf_pem("bound.test")
    assert b"PRIVATE KEY" in leaf and b"PRIVATE KEY" not in ca.certificate_pem
    assert not host_ca.holds({"bound.test": leaf})
    host_ca.install({"bound.test": leaf})
    assert host_ca.holds({"bound.test": leaf})
    context = host_ca.server_context("bound.test")
    host_ca.install({"bound.test": leaf})  # the same leaf again: nothing new is loaded
    assert host_ca.server_context("bound.test") is context

    client = ssl.create_default_context(cadata=ca.certificate_pem.decode())
    assert _handshake(context, client, "bound.test")
    with pytest.raises(ssl.SSLError):  # the SNI must name the bound host
        _handshake(
            context, ssl.create_default_context(cadata=ca.certificate_pem.decode()), "x.test"
        )

    with pytest.raises(ValueError, match=r"not constrained to 'other\.test'"):
        host_ca.install({"other.test": leaf})
    with pytest.raises(ssl.SSLError):
        HostCA(ca.certificate_pem).install({"bound.test": b"not a certificate"})
    # A certificate that is not a name-constrained CA is refused at registration.
    with pytest.raises(ValueError, match="not constrained"):
        HostCA(TlsOrigin(["bound.test"], lambda _r: (200, {}, b"")).certificate_pem)

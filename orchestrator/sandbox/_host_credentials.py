"""Credentials on their way to a Ray sandbox host, and what the host does with them.

On the Ray engine the egress proxy serving a container runs on the container's
host, another machine. A call bound to credentials therefore sends the host
what its proxy needs, for that call only:

- the credentials (name, host, header, template and the secret's value);
- the leaf of each of their hosts (certificate chain and private key), issued
  by the deployment's CA in the orchestrator, whose own key never leaves it.

Both travel **sealed** to the host (HPKE, RFC 9180: X25519, HKDF-SHA256,
AES-256-GCM, from ``cryptography``): each host actor makes a key pair when it
starts, keeps the private key in memory only and publishes the public key in
its record. The sealed bytes name the host and the orchestrator (HPKE's
``info``), so a box made for one host cannot be opened by another, nor
replayed as another orchestrator's. Ray's channel is authenticated by its
token but not encrypted unless the cluster runs with TLS; sealing keeps the
secrets unreadable to anyone who reads the network between the machines.

The host keeps the secrets in the call's proxy (in memory) until the call's
container is destroyed, and the leaves in a :class:`HostCA`, which serves them
to its proxies as the orchestrator's :class:`~orchestrator.sandbox.egress_ca.DeploymentCA`
does (the sandboxes trust the CA certificate the orchestrator registered with).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress_ca import constrained_hosts, leaf_context, trust_bundle

__all__ = ["CallCredentials", "HostCA", "SealingKey", "seal"]

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO = b"stockade egress credentials v1"


def _info(host: str, orchestrator: str) -> bytes:
    return b"\0".join((_INFO, host.encode(), orchestrator.encode()))


def seal(public_key: str, plaintext: bytes, *, host: str, orchestrator: str) -> bytes:
    """``plaintext`` sealed to the host whose record published ``public_key`` (base64).

    Raises :class:`ValueError` for a key that is not a base64 X25519 public key.
    """
    try:
        raw = base64.b64decode(public_key, validate=True)
        key = X25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"host {host!r} published no usable sealing key: {exc}") from None
    return _SUITE.encrypt(plaintext, key, info=_info(host, orchestrator))


class SealingKey:
    """A host's key pair for sealed credentials, made at start and kept in memory only."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()

    @property
    def public(self) -> str:
        """The public key, base64 (published in the host's record)."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def open(self, sealed: bytes, *, host: str, orchestrator: str) -> bytes:
        """The plaintext of ``sealed``; :class:`ValueError` when it was not sealed to this
        key for ``host`` and ``orchestrator``, or was altered."""
        try:
            return _SUITE.decrypt(sealed, self._key, info=_info(host, orchestrator))
        except (InvalidTag, ValueError) as exc:
            raise ValueError(
                "the call's sealed credentials do not open with this host's key (sealed for "
                "another host or orchestrator, altered, or sealed before this host restarted)"
                f": {type(exc).__name__}"
            ) from None


class CallCredentials:
    """What one call's proxy needs on a host: the credentials and their hosts' leaves."""

    def __init__(self, credentials: Sequence[Credential], leaves: Mapping[str, bytes]) -> None:
        """``leaves``: PEM (chain and key) by host name, one for each credential's host."""
        missing = sorted({c.host for c in credentials} - set(leaves))
        if missing:
            raise ValueError(f"no leaf for {', '.join(missing)}")
        self.credentials = tuple(credentials)
        self.leaves = dict(leaves)

    def encode(self) -> bytes:
        """JSON, to be sealed (it holds secrets: never log or store it)."""
        return json.dumps(
            {
                "credentials": [
                    {
                        "name": c.name,
                        "host": c.host,
                        "port": c.port,
                        "header": c.header,
                        "template": c.template,
                        "value": c.value,
                        "upstream_ca": c.upstream_ca.decode("ascii") if c.upstream_ca else None,
                    }
                    for c in self.credentials
                ],
                "leaves": {host: pem.decode("ascii") for host, pem in self.leaves.items()},
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> CallCredentials:
        """Read :meth:`encode`'s form; :class:`ValueError` when it is not that."""
        try:
            parsed: Any = json.loads(data)
            credentials = [
                Credential(
                    name=str(item["name"]),
                    host=str(item["host"]),
                    port=int(item["port"]),
                    header=str(item["header"]),
                    template=str(item["template"]),
                    value=str(item["value"]),
                    upstream_ca=str(item["upstream_ca"]).encode("ascii")
                    if item.get("upstream_ca")
                    else None,
                )
                for item in parsed["credentials"]
            ]
            leaves = {str(host): str(pem).encode("ascii") for host, pem in parsed["leaves"].items()}
        except (KeyError, TypeError, AttributeError, UnicodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed call credentials: {type(exc).__name__}") from None
        return cls(credentials, leaves)


class HostCA:
    """The deployment's CA as a sandbox host holds it: the certificate the orchestrator
    registered with, and the leaves its calls bring. Never the CA's key.

    Implements :class:`~orchestrator.sandbox._egress_tls.ProxyCA` for the host's proxies.
    """

    def __init__(self, certificate_pem: bytes) -> None:
        """Raises :class:`ValueError` for a certificate that is not a name-constrained CA."""
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        hosts = constrained_hosts(certificate)
        if not hosts:
            raise ValueError("the egress CA certificate is not constrained to any host")
        self._pem = certificate.public_bytes(serialization.Encoding.PEM)
        self._hosts = hosts
        self._bundle: bytes | None = None
        # Per host: the digest of the leaf's PEM and the context made from it.
        self._contexts: dict[str, tuple[bytes, ssl.SSLContext]] = {}

    @property
    def hosts(self) -> frozenset[str]:
        """The names the CA may vouch for."""
        return self._hosts

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate (what this host's sandboxes trust)."""
        return self._pem

    def trust_bundle(self) -> bytes:
        """This host's trust anchors and the CA (tunnelled hosts keep their own certificates)."""
        if self._bundle is None:
            self._bundle = trust_bundle(self._pem)
        return self._bundle

    def install(self, leaves: Mapping[str, bytes]) -> None:
        """Serve ``leaves`` (PEM by host) from now on; a leaf already held costs nothing.

        Blocking when a leaf is new (its key is loaded through a private
        temporary file): call it in a thread. Raises :class:`ValueError` for a
        host outside the CA's names and :class:`ssl.SSLError` for bad material.
        """
        for host, pem in leaves.items():
            if host not in self._hosts:
                raise ValueError(f"the egress CA is not constrained to {host!r}")
            digest = hashlib.sha256(pem).digest()
            held = self._contexts.get(host)
            if held is None or held[0] != digest:
                self._contexts[host] = (digest, leaf_context(host, pem))

    def holds(self, leaves: Mapping[str, bytes]) -> bool:
        """Whether every one of ``leaves`` is installed already (no thread needed)."""
        return all(
            self._contexts.get(host, (b"", None))[0] == hashlib.sha256(pem).digest()
            for host, pem in leaves.items()
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """The context of ``host``'s installed leaf; :class:`ValueError` when none is."""
        held = self._contexts.get(host)
        if held is None:
            raise ValueError(f"no leaf for {host!r} was sent to this host")
        return held[1]

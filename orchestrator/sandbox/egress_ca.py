"""The deployment's CA: how the egress proxy terminates TLS for hosts that get credentials.

Created in the state directory on the first start that binds a credential
(so a wheel install works; nothing is baked into an image, whose hash stays
the same for every deployment): ``egress-ca/ca.pem`` and ``ca-key.pem``, the
key readable only by the orchestrator's user (0600, in a 0700 directory).

The CA is name-constrained (critical ``NameConstraints``) to the bound hosts:
even a stolen key cannot vouch for any other name. When the bound hosts change,
a new CA is made. Leaf certificates (one per bound host, short-lived, kept in
memory) are issued at first use. Sandboxes trust the CA through a certificate
mounted beside their egress socket, never through their image.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = [
    "CA_DIRECTORY",
    "DeploymentCA",
    "constrained_hosts",
    "leaf_context",
    "system_trust_anchors",
    "trust_bundle",
]

CA_DIRECTORY = "egress-ca"
"""The CA's directory in the state directory."""

_CA_LIFETIME = datetime.timedelta(days=3650)
_LEAF_LIFETIME = datetime.timedelta(days=7)
# Leaves are reissued when less than this is left; the CA likewise, with a month.
_LEAF_RENEW = datetime.timedelta(days=1)
_CA_RENEW = datetime.timedelta(days=30)
_BACKDATE = datetime.timedelta(hours=1)  # clocks of sandboxes and hosts differ a little


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _failure(message: str) -> InfrastructureError:
    return InfrastructureError(
        message, code=ErrorCode.INSTALLATION, op="egress.ca", retryable=False
    )


def system_trust_anchors() -> bytes:
    """The host's CA bundle (what the proxy trusts upstream), for the sandbox's bundle."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_bytes()
    try:
        import certifi  # noqa: PLC0415 - only when the host has no bundle of its own

        return Path(certifi.where()).read_bytes()
    except ImportError:
        return b""


def trust_bundle(certificate_pem: bytes, anchors: bytes | None = None) -> bytes:
    """``anchors`` (default: the host's trust store) followed by the CA's certificate."""
    if anchors is None:
        anchors = system_trust_anchors()
    separator = b"" if not anchors or anchors.endswith(b"\n") else b"\n"
    return anchors + separator + certificate_pem


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` so that only this user can ever read it, replacing ``path`` atomically."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def constrained_hosts(certificate: x509.Certificate) -> frozenset[str] | None:
    """The DNS names a CA certificate's name constraints permit; None without constraints."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return frozenset(
        name.value
        for name in constraints.permitted_subtrees or ()
        if isinstance(name, x509.DNSName)
    )


def _key_id(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


class DeploymentCA:
    """A CA private to one deployment, constrained to the hosts that get credentials."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        *,
        directory: Path,
        clock: Callable[[], datetime.datetime] = _now,
        anchors: bytes | None = None,
    ) -> None:
        """Use :meth:`open`."""
        self._key = key
        self._certificate = certificate
        self._directory = directory
        self._clock = clock
        self._anchors = anchors
        self._hosts = constrained_hosts(certificate) or frozenset()
        self._leaves: dict[str, _Leaf] = {}
        self._lock = threading.Lock()
        self._bundle: bytes | None = None

    @classmethod
    def open(
        cls,
        state_dir: Path,
        hosts: Sequence[str],
        *,
        clock: Callable[[], datetime.datetime] = _now,
        anchors: bytes | None = None,
    ) -> DeploymentCA:
        """The CA in ``state_dir/egress-ca``: loaded, or made when missing, expiring, or
        constrained to other hosts than ``hosts``.

        ``anchors`` (PEM) are what the sandbox's bundle trusts besides the CA, for
        tunnelled hosts; default: the host's own trust store.

        Raises :class:`~orchestrator.errors.InfrastructureError` when the directory
        cannot be written or its files are damaged.
        """
        if not hosts:
            raise ValueError("a CA needs at least one host to be constrained to")
        directory = state_dir / CA_DIRECTORY
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
            found = cls._load(directory, frozenset(hosts))
            key, certificate = found or cls._create(directory, sorted(set(hosts)), clock)
            return cls(key, certificate, directory=directory, clock=clock, anchors=anchors)
        except (OSError, ValueError) as exc:
            raise _failure(f"cannot open the egress CA in {directory}: {exc}") from exc

    @classmethod
    def _load(
        cls, directory: Path, hosts: frozenset[str]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
        cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
        if not (cert_path.is_file() and key_path.is_file()):
            return None
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None
        fresh = certificate.not_valid_after_utc - _now() > _CA_RENEW
        if constrained_hosts(certificate) != hosts or not fresh:
            return None  # bound to other hosts, or expiring: a new CA replaces it
        key_path.chmod(0o600)
        return key, certificate

    @classmethod
    def _create(
        cls, directory: Path, hosts: list[str], clock: Callable[[], datetime.datetime]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade deployment"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Stockade egress CA"),
            ]
        )
        now = clock()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName(host) for host in hosts],
                    excluded_subtrees=None,
                ),
                critical=True,
            )
            .add_extension(_key_id(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            directory / "ca-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        _write_private(directory / "ca.pem", cert_pem)
        (directory / "ca.pem").chmod(0o644)
        return key, certificate

    @property
    def hosts(self) -> frozenset[str]:
        """The names this CA may vouch for."""
        return self._hosts

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate (what sandboxes trust)."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def trust_bundle(self) -> bytes:
        """The host's trust anchors and this CA: the sandbox's ``SSL_CERT_FILE``.

        Unbound hosts keep their own certificates (tunnelled), so the sandbox
        must still trust what it trusted before.
        """
        if self._bundle is None:
            self._bundle = trust_bundle(self.certificate_pem, self._anchors)
        return self._bundle

    def issue_all(self) -> None:
        """Issue every host's leaf now (blocking: call it in a thread), so that no first
        connection makes its event loop wait for a key to be generated."""
        for host in sorted(self._hosts):
            self.server_context(host)

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for ``host``; only SNI ``host`` is accepted.

        HTTP/1.1 is the only protocol offered in ALPN. Raises :class:`ValueError`
        for a host outside the CA's constraints.
        """
        return self._leaf(host).context

    def leaf_pem(self, host: str) -> bytes:
        """``host``'s leaf as PEM: its certificate, the CA's, and its private key.

        What a sandbox host's proxy needs to terminate TLS for ``host`` (sent
        sealed, with the call's credentials, see :mod:`orchestrator.sandbox._sealed`);
        never the CA's own key. Raises :class:`ValueError` like :meth:`server_context`.
        """
        return self._leaf(host).pem

    def _leaf(self, host: str) -> _Leaf:
        if host not in self._hosts:
            raise ValueError(f"the egress CA is not constrained to {host!r}")
        with self._lock:
            cached = self._leaves.get(host)
            if cached is not None and cached.expires - self._clock() > _LEAF_RENEW:
                return cached
            pem, expires = self._issue(host)
            leaf = _Leaf(
                pem=pem, expires=expires, context=leaf_context(host, pem, directory=self._directory)
            )
            self._leaves[host] = leaf
            return leaf

    def _issue(self, host: str) -> tuple[bytes, datetime.datetime]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._clock()
        expires = now + _LEAF_LIFETIME
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_key_id(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.certificate_pem
        secret = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return chain + secret, expires


@dataclass(frozen=True, slots=True)
class _Leaf:
    pem: bytes
    expires: datetime.datetime
    context: ssl.SSLContext


def leaf_context(host: str, pem: bytes, *, directory: Path | None = None) -> ssl.SSLContext:
    """A TLS server context presenting ``pem`` (a leaf's chain and key) for ``host`` only.

    HTTP/1.1 is the only protocol offered in ALPN, and a handshake whose SNI
    names another host (or none) fails. ``directory``: where the key passes
    through a private file for the moment it is loaded (default: the system's
    temporary directory). Raises :class:`ssl.SSLError` for material that is not
    a certificate chain with its key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    # Each sandbox connects once: TLS 1.3 session tickets would only be more writes.
    context.num_tickets = 0
    # Python loads a certificate and key from files only: a private file (mkstemp
    # makes it 0600), gone again once loaded.
    descriptor, material = tempfile.mkstemp(dir=directory, prefix=".leaf-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(material)
    finally:
        Path(material).unlink(missing_ok=True)

    def only_the_bound_name(
        _connection: ssl.SSLObject, name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        # The CONNECT target named the host; the TLS SNI must name it too.
        return None if name == host else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    context.sni_callback = only_the_bound_name
    return context

"""The egress socket of one container: a directory with the proxy's Unix socket.

Each container of an egress profile gets its own directory, bind-mounted
read-only at :data:`MOUNT_POINT`, and its own proxy server on the socket in
it, so every connection is attributed to the one call that container serves.

For a profile some credential is bound to, the directory also holds the
deployment CA (``ca.pem``) and the host's trust anchors with it
(``ca-bundle.pem``), and :attr:`EgressGate.environment` points the usual
variables at them (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``,
``NODE_EXTRA_CA_CERTS``): the sandbox trusts the proxy's leaves for bound hosts
without the CA ever being part of its image. The call's credentials are handed
to the gate's proxy (:meth:`EgressGate.arm`) when the container is given its
call, and live in the proxy's memory only.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.metrics import SandboxMetrics
from orchestrator.sandbox._egress_tls import Interception
from orchestrator.sandbox._gate_directory import GateDirectory
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress import (
    Connector,
    EgressConnection,
    EgressPolicy,
    EgressProxy,
    Resolver,
    direct_connector,
    system_resolver,
)

__all__ = [
    "CA_BUNDLE_NAME",
    "CA_NAME",
    "MOUNT_POINT",
    "SOCKET_NAME",
    "EgressGate",
    "EgressGates",
    "ca_environment",
]

MOUNT_POINT = "/run/stockade"
SOCKET_NAME = "egress.sock"
CA_NAME = "ca.pem"
"""The deployment CA alone (Node adds it to its own roots)."""
CA_BUNDLE_NAME = "ca-bundle.pem"
"""The host's trust anchors and the deployment CA (OpenSSL and requests replace theirs)."""


def ca_environment() -> dict[str, str]:
    """The variables that make a sandbox trust the CA files of its gate (the usual
    libraries' own: OpenSSL, requests, curl, Node)."""
    bundle = f"{MOUNT_POINT}/{CA_BUNDLE_NAME}"
    return {
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "NODE_EXTRA_CA_CERTS": f"{MOUNT_POINT}/{CA_NAME}",
    }


@dataclass(eq=False, kw_only=True)
class EgressGate:
    """The proxy serving one container, and what it saw."""

    directory: Path
    server: asyncio.Server
    proxy: EgressProxy
    events: list[EgressConnection] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    """Variables the sandbox's process gets for this gate (the CA's files, when mounted)."""

    def arm(self, credentials: tuple[Credential, ...]) -> None:
        """Hand the call's credentials to the proxy (see :meth:`EgressProxy.arm`)."""
        self.proxy.arm(credentials)

    async def settle(self, timeout_s: float = 1.0) -> list[EgressConnection]:
        """The events so far, after open connections (closing as the call ends) report."""
        await self.proxy.wait_idle(timeout_s)
        return list(self.events)

    async def close(self) -> None:
        """Stop serving and remove the socket directory."""
        self.server.close()
        await self.server.wait_closed()
        await asyncio.to_thread(shutil.rmtree, self.directory, True)


class EgressGates:
    """Opens a gate per container, in a directory of its own (see :class:`GateDirectory`)."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        metrics: SandboxMetrics | None = None,
        interception: Interception | None = None,
    ) -> None:
        """``root``: where the gates' directory is made (default: the system's temporary
        directory). ``interception`` (the deployment CA, the profiles it serves, the
        upstream TLS) lets the proxies add credentials; without it, every CONNECT is a
        tunnel."""
        self._directory = GateDirectory(root, socket_name=SOCKET_NAME)
        self._resolver = resolver
        self._connector = connector
        self._metrics = metrics
        self._interception = interception

    async def prepare(self) -> None:
        """Make the gates' directory now, not at the first gate (sweeping, under its root,
        what owners killed before left)."""
        await asyncio.to_thread(self._directory.path)

    async def close(self) -> None:
        """Close the upstream connections kept for credentialed requests, and remove the
        gates' directory (call it once no container uses a gate any more)."""
        if self._interception is not None:
            await self._interception.pool.close()
        await asyncio.to_thread(self._directory.remove)

    def _ca_files(self, directory: Path, profile: str) -> dict[str, str]:
        """Write the CA files into a gate's directory; the variables that point at them."""
        interception = self._interception
        if interception is None or profile not in interception.profiles:
            return {}
        ca = interception.ca
        (directory / CA_NAME).write_bytes(ca.certificate_pem)
        (directory / CA_BUNDLE_NAME).write_bytes(ca.trust_bundle())
        for name in (CA_NAME, CA_BUNDLE_NAME):
            (directory / name).chmod(0o644)
        return ca_environment()

    async def open(self, policy: EgressPolicy, *, profile: str = "") -> EgressGate:
        """A socket directory with a proxy listening in it; ``profile`` labels its metrics."""
        directory = await asyncio.to_thread(self._directory.gate)
        # The sandbox user must reach the socket; nothing else lives here.
        await asyncio.to_thread(directory.chmod, 0o755)
        events: list[EgressConnection] = []
        metrics = self._metrics

        def seen(connection: EgressConnection) -> None:
            events.append(connection)
            if metrics is not None:
                metrics.egress(profile, allowed=connection.allowed)
                if connection.secret is not None:
                    metrics.credential_used(profile, connection.secret)

        proxy = EgressProxy(
            policy,
            on_event=seen,
            resolver=self._resolver,
            connector=self._connector,
            interception=self._interception,
        )
        try:
            environment = await asyncio.to_thread(self._ca_files, directory, profile)
            server = await proxy.serve(directory / SOCKET_NAME)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        return EgressGate(
            directory=directory, server=server, proxy=proxy, events=events, environment=environment
        )

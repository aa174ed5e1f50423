"""The egress socket of one container: a directory with the proxy's Unix socket.

Each container of an egress profile gets its own directory, bind-mounted
read-only at :data:`MOUNT_POINT`, and its own proxy server on the socket in
it, so every connection is attributed to the one call that container serves.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.metrics import SandboxMetrics
from orchestrator.sandbox.egress import (
    Connector,
    EgressConnection,
    EgressPolicy,
    EgressProxy,
    Resolver,
    direct_connector,
    system_resolver,
)

__all__ = ["MOUNT_POINT", "SOCKET_NAME", "EgressGate", "EgressGates"]

MOUNT_POINT = "/run/stockade"
SOCKET_NAME = "egress.sock"


@dataclass(eq=False, kw_only=True)
class EgressGate:
    """The proxy serving one container, and what it saw."""

    directory: Path
    server: asyncio.Server
    proxy: EgressProxy
    events: list[EgressConnection] = field(default_factory=list)

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
    """Opens a gate per container under one root directory."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        metrics: SandboxMetrics | None = None,
    ) -> None:
        self._root = root
        self._resolver = resolver
        self._connector = connector
        self._metrics = metrics

    async def open(self, policy: EgressPolicy, *, profile: str = "") -> EgressGate:
        """A socket directory with a proxy listening in it; ``profile`` labels its metrics."""
        directory = Path(tempfile.mkdtemp(prefix="stockade-egress-", dir=self._root))
        # The sandbox user must reach the socket; nothing else lives here.
        await asyncio.to_thread(directory.chmod, 0o755)
        events: list[EgressConnection] = []
        metrics = self._metrics

        def seen(connection: EgressConnection) -> None:
            events.append(connection)
            if metrics is not None:
                metrics.egress(profile, allowed=connection.allowed)

        proxy = EgressProxy(
            policy, on_event=seen, resolver=self._resolver, connector=self._connector
        )
        try:
            server = await proxy.serve(directory / SOCKET_NAME)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        return EgressGate(directory=directory, server=server, proxy=proxy, events=events)

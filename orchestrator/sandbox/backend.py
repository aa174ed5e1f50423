"""The interface every sandbox backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile

__all__ = ["SandboxBackend"]


class SandboxBackend(ABC):
    """Runs one request in one single-use sandbox, then destroys the sandbox.

    Use as an async context manager: entering starts the backend (reaping
    leftovers, warming pools), leaving destroys everything it still holds.
    """

    @abstractmethod
    async def start(self) -> None:
        """Prepare to serve calls."""

    @abstractmethod
    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        """Run ``request`` under ``profile``. Tool failures are results, not exceptions;
        infrastructure failures raise :class:`~orchestrator.errors.InfrastructureError`."""

    @abstractmethod
    async def close(self) -> None:
        """Destroy every sandbox this backend still holds."""

    async def wait_ready(self, timeout_s: float) -> float | None:
        """Wait, at most ``timeout_s``, until the backend can serve calls.

        Returns how long it could not (0.0: it could at once), or None when it
        still cannot. A backend with nothing to wait for answers at once.
        """
        return 0.0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

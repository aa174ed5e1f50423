"""A platform for testing toolkits: every tool allowed, state in a directory of the test's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.config import StockadeConfig
from orchestrator.platform import Platform
from orchestrator.sandbox.backend import SandboxBackend

__all__ = ["open_test_platform"]


def _allow_all_policy(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = state_dir / "allow-all.yaml"
    policy.write_text("version: 1\ndefault: allow\n", encoding="utf-8")
    return policy


@contextlib.asynccontextmanager
async def open_test_platform(
    state_dir: Path,
    *,
    toolkits: tuple[str, ...],
    runtime: str = "runc",
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    backend: SandboxBackend | None = None,
    warm: bool = False,
) -> AsyncIterator[Platform]:
    """:meth:`Platform.open` with a policy that allows every tool, for a toolkit's own tests.

    A test exercises the tools themselves, still through the one path every
    call takes (``platform.gateway.call(...)``: validation, sandbox, audit).
    ``profiles`` are written as in ``stockade.yaml``
    (``{"default": {"memory_mb": 256}}``); ``backend`` replaces the Docker
    backend (e.g. with a :class:`~orchestrator.testing.backend.ScriptedBackend`);
    ``warm`` fills the pools before it returns (a call then finds a container
    fully prepared, not one started while the call waits).
    """
    policy = await asyncio.to_thread(_allow_all_policy, state_dir)
    config = StockadeConfig.model_validate(
        {
            "state_dir": state_dir,
            "policy": policy,
            "toolkits": toolkits,
            "sandbox": {"runtime": runtime, "profiles": dict(profiles or {})},
        }
    )
    async with Platform.open(config, backend=backend, warm=warm) as platform:
        yield platform

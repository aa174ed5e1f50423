"""What the benchmark scripts share: being stopped cleanly, their percentiles, the gateway.

Imported by the scripts as ``_bench`` (their own directory is first on
``sys.path`` when run as ``.venv/bin/python benchmarks/NAME.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrator.config import StockadeConfig
from orchestrator.gateway import Gateway
from orchestrator.platform import Platform
from orchestrator.testing.backend import ScriptedBackend


def stop_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``, a CI runner) stop the script as Ctrl-C does.

    The default SIGTERM ends the process at once, leaving its pooled
    containers to the next start's reaper. Raising KeyboardInterrupt from the
    handler is no better: it lands wherever the loop happens to be. A SIGINT
    sent to itself is what ``asyncio.run`` handles: it cancels the main task,
    and every ``async with Platform.open(...)`` removes its sandboxes on the
    way out (a script with no loop gets KeyboardInterrupt, as from Ctrl-C).
    """
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os.kill(os.getpid(), signal.SIGINT))


def percentiles(
    samples: list[float], *, scale: float = 1000.0, shares: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> tuple[float, ...]:
    """The nearest-rank values of ``samples`` (seconds) at ``shares``, times ``scale``.

    ``scale`` 1000 gives milliseconds (the default), 1e6 microseconds.
    """
    ordered = sorted(samples)
    last = len(ordered) - 1
    return tuple(ordered[min(last, round(share * last))] * scale for share in shares)


def _config(state: Path, policy: str, settings: dict[str, Any]) -> StockadeConfig:
    state.mkdir()
    (state / "policy.yaml").write_text(policy)
    return StockadeConfig(
        state_dir=state, toolkits=("toolkits.python",), policy=state / "policy.yaml", **settings
    )


@contextlib.asynccontextmanager
async def shipped_gateway(state: Path, policy: str, **settings: Any) -> AsyncIterator[Gateway]:
    """The gateway every entrance gets: ``Platform.open`` with ``policy`` (YAML text).

    ``state`` (made here) is its state directory: its audit log, approvals
    and, by default, its limits in SQLite; ``settings`` are more of the
    configuration's sections (``limits=...``). The sandbox is the scripted
    backend, which answers at once: what is timed is the gateway's own work.
    """
    config = _config(state, policy, settings)
    async with Platform.open(config, backend=ScriptedBackend(), pools=False) as opened:
        yield opened.gateway

"""The metrics endpoint a long-running process serves, as the configuration asks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from orchestrator.config import StockadeConfig
from orchestrator.metrics import Metrics, MetricsEndpoint, serve_metrics

__all__ = ["serving_metrics"]


@contextlib.asynccontextmanager
async def serving_metrics(
    metrics: Metrics, config: StockadeConfig, port: int | None, *, command: str
) -> AsyncIterator[MetricsEndpoint | None]:
    """Serve ``metrics`` while the block runs, if ``port`` is given or ``metrics.serve`` is on.

    On ``metrics.host`` and ``port`` (else ``metrics.port``), with a discovery file in
    ``metrics.targets_dir`` labelled ``command``, for Prometheus and ``stockade metrics``.
    Yields the endpoint, or ``None`` when not serving.
    """
    settings = config.metrics
    if port is None and not settings.serve:
        yield None
        return
    async with serve_metrics(
        metrics,
        settings.host,
        settings.port if port is None else port,
        targets_dir=config.metrics_targets_dir,
        labels={"command": command},
    ) as endpoint:
        yield endpoint

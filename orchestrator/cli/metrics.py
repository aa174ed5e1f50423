"""``stockade metrics``: the current exposition; and ``--metrics-port`` for long-running commands.

The running processes of this host that serve ``/metrics`` leave discovery
files in ``metrics/targets`` of the state directory (see
:mod:`orchestrator.metrics`); ``stockade metrics`` reads them and prints what
each endpoint serves right now. Long-running commands (``stockade run``, the
demo) take :func:`metrics_port_option` and serve with :func:`serving_metrics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from orchestrator.cli._common import EXIT_FAILED, config_option, load, progress
from orchestrator.config import LoadedConfig
from orchestrator.metrics import Metrics, MetricsEndpoint, live_targets, render
from orchestrator.platform import serving_metrics as served

__all__ = ["metrics", "metrics_port_option", "serving_metrics"]

F = TypeVar("F", bound=Callable[..., Any])
_FETCH_TIMEOUT_S = 10.0


def metrics_port_option(command: F) -> F:
    """``--metrics-port PORT``: serve ``/metrics`` on this port while the command runs."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics at http://HOST:PORT/metrics while this runs (HOST: "
        "metrics.host, 127.0.0.1 by default; 0: any free port). Default: metrics.serve and "
        "metrics.port.",
    )(command)


@contextlib.asynccontextmanager
async def serving_metrics(
    metrics: Metrics, loaded: LoadedConfig, port: int | None, *, command: str
) -> AsyncIterator[MetricsEndpoint | None]:
    """:func:`orchestrator.platform.serving_metrics` for a command: the endpoint's URL goes
    to standard error. Yields ``None`` when not serving."""
    async with served(metrics, loaded.config, port, command=command) as endpoint:
        if endpoint is not None:
            progress(f"metrics at {endpoint.url}")
        yield endpoint


@click.command()
@config_option
@click.option("--url", help="Fetch this endpoint instead of the host's serving processes.")
def metrics(config_file: Path | None, url: str | None) -> None:
    """Print the metrics the running Stockade processes serve now (Prometheus text format).

    Reads the endpoints that running processes (stockade run --metrics-port,
    the demo, and with metrics.serve also stockade serve) registered in the
    state directory; with several, each exposition
    follows a comment naming its URL. With none running, prints every metric
    defined, at zero, and says so on standard error.
    """
    loaded = load(config_file)
    urls = [url] if url else live_targets(loaded.config.metrics_targets_dir)
    if not urls:
        progress("no Stockade process is serving metrics now; the metrics defined, at zero:")
        body, _ = render(Metrics())
        click.echo(body.decode(), nl=False)
        return
    failed = False
    for target in urls:
        try:
            response = httpx.get(target, timeout=_FETCH_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot read {target}: {exc}", err=True)
            failed = True
            continue
        if len(urls) > 1:
            click.echo(f"# stockade metrics from {target}")
        click.echo(response.text, nl=False)
    if failed:
        raise SystemExit(EXIT_FAILED)

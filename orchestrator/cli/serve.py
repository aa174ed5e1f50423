"""``stockade serve``: the HTTP API, one platform for the process's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import uvicorn

from orchestrator.cli._common import EXIT_FAILED, config_option, load
from orchestrator.errors import StockadeError
from orchestrator.platform import check_configuration
from orchestrator.sandbox.engine import connect_engine
from orchestrator.server import TokenStore, check_bind, create_app, render_openapi, uvicorn_config

__all__ = ["serve"]


@click.command()
@config_option
@click.option("--host", help="Address to listen on (overrides server.host). Default 127.0.0.1.")
@click.option("--port", type=int, help="Port to listen on (overrides server.port). Default 8787.")
@click.option("--openapi", "print_openapi", is_flag=True,
              help="Print the API's OpenAPI document and exit.")  # fmt: skip
def serve(
    config_file: Path | None, host: str | None, port: int | None, print_openapi: bool
) -> None:
    """Serve the HTTP API: tools, tool calls and approvals under /v1, /healthz and /readyz.

    Requests need an API token (stockade tokens create). Listening on anything
    but loopback needs one to exist first; while none was ever issued, a
    loopback server serves requests without a token as the user running it.
    Ctrl-C or SIGTERM stops it: open requests get server.shutdown_grace_s to
    finish, then every sandbox is removed.
    """
    if print_openapi:
        click.echo(render_openapi(), nl=False)
        return
    flags: dict[str, Any] = {"server.host": host, "server.port": port}
    loaded = load(config_file, **flags)
    settings = loaded.config.server
    # What usually goes wrong, said in one line before the server starts.
    check_configuration(loaded)
    tokens = TokenStore(loaded.config.tokens_db)
    try:
        check_bind(settings.host, tokens)
        active, ever = len(tokens.tokens()), tokens.ever_issued()
    finally:
        tokens.close()
    connect_engine().close()
    if active:
        click.echo(f"API tokens: {active} active", err=True)
    elif not ever and settings.unauthenticated_loopback:
        click.echo(
            "no API token was ever issued: requests without a token are served as you, "
            "from loopback only, until `stockade tokens create` issues the first",
            err=True,
        )
    else:
        click.echo("no active API token: every request will be refused", err=True)
    app = create_app(loaded)
    server = uvicorn.Server(
        uvicorn_config(
            app, host=settings.host, port=settings.port, shutdown_grace_s=settings.shutdown_grace_s
        )
    )
    # uvicorn turns Ctrl-C and SIGTERM into a graceful shutdown, which closes the platform.
    with contextlib.suppress(SystemExit):  # uvicorn exits this way when the start failed
        asyncio.run(server.serve())
    if not server.started:
        error = getattr(app.state, "startup_error", None)
        if isinstance(error, StockadeError):
            raise error
        click.echo("error: the server did not start (see above)", err=True)
        sys.exit(EXIT_FAILED)

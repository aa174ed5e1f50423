"""``stockade hosts``: the sandbox hosts of the configured Ray cluster; drain and undrain.

Needs ``sandbox.engine: ray``: the command joins the cluster as a driver (so
it must run where an orchestrator could: on a node of the cluster, with the
token in its environment) and asks every host's actor for its record.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from orchestrator.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo_json,
    json_option,
    load,
    run_async,
    table,
)
from orchestrator.config import RayBackendSettings
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.sandbox.hosts import HostView, connect, list_hosts, reachable, set_draining

__all__ = ["hosts"]


def _cluster(config_file: Path | None) -> RayBackendSettings:
    sandbox = load(config_file).config.sandbox
    if sandbox.engine != "ray" or sandbox.ray is None:
        raise ConfigError(
            f"sandbox.engine is {sandbox.engine}: stockade hosts lists the hosts of a Ray "
            "cluster; set `engine: ray` and `ray: {address: ...}` in the sandbox section"
        )
    return sandbox.ray


async def _joined(cluster: RayBackendSettings) -> None:
    why = await reachable(cluster.address)
    if why:
        raise InfrastructureError(
            f"the Ray cluster at {cluster.address} does not answer ({why}); "
            "`stockade doctor` checks the cluster and names the fix",
            code=ErrorCode.ENGINE_UNAVAILABLE,
            op="hosts",
            retryable=True,
        )
    await asyncio.to_thread(connect, cluster.address, cluster.namespace)


def _pools(view: HostView) -> str:
    return ", ".join(
        f"{name} {sizes.get('ready', 0)}/{sizes.get('target', 0)}"
        for name, sizes in sorted(view.profiles.items())
    )


def _print(views: list[HostView], as_json: bool) -> None:
    if as_json:
        echo_json([view.as_json() for view in views])
        return
    rows = []
    for view in views:
        state = f"{view.state}: {view.reason}" if view.reason else view.state
        if view.refused_for and view.state != "refused":  # images are per orchestrator
            state += f" (refuses orchestrator(s) {', '.join(sorted(view.refused_for))})"
        rows.append(
            (
                view.name,
                state,
                view.node,
                view.engine_version,
                ",".join(view.runtimes),
                _pools(view),
                view.in_flight,
                view.served,
                view.last_error,
            )
        )
    table(
        ["HOST", "STATE", "NODE", "ENGINE", "RUNTIMES", "POOLS (ready/target)", "IN FLIGHT",
         "SERVED", "LAST ERROR"],
        rows,
    )  # fmt: skip


@click.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def hosts(context: click.Context, config_file: Path | None, as_json: bool) -> None:
    """List the Ray cluster's sandbox hosts: node, engine, runtimes, pools, load, state.

    A host's state is up, draining (takes no new calls), lost (its node, its
    actor or its Docker engine does not answer) or refused (its images are
    missing or differ: the reason names the fix). Exit 1 when a host is lost
    or refused.
    """
    context.ensure_object(dict)
    context.obj["config_file"] = config_file
    if context.invoked_subcommand is not None:
        return
    cluster = _cluster(config_file)

    async def listed() -> list[HostView]:
        await _joined(cluster)
        return await list_hosts(cluster.namespace)

    views = run_async(listed())
    _print(views, as_json)
    if not as_json and not views:
        click.echo(f"no sandbox host in the cluster at {cluster.address}", err=True)
    broken = [view for view in views if view.state in ("lost", "refused")]
    sys.exit(EXIT_FAILED if broken or not views else EXIT_OK)


def _set(
    context: click.Context, config_file: Path | None, name: str, as_json: bool, draining: bool
) -> None:
    cluster = _cluster(config_file or context.obj["config_file"])

    async def changed() -> HostView:
        await _joined(cluster)
        return await set_draining(name, cluster.namespace, draining)

    _print([run_async(changed())], as_json)


@hosts.command()
@click.argument("name")
@config_option
@json_option
@click.pass_context
def drain(context: click.Context, name: str, config_file: Path | None, as_json: bool) -> None:
    """Send host NAME no new calls (every orchestrator, within its refresh); calls in
    flight finish. Undo with `stockade hosts undrain NAME`."""
    _set(context, config_file, name, as_json, True)


@hosts.command()
@click.argument("name")
@config_option
@json_option
@click.pass_context
def undrain(context: click.Context, name: str, config_file: Path | None, as_json: bool) -> None:
    """Let host NAME take new calls again."""
    _set(context, config_file, name, as_json, False)

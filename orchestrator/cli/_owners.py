"""Run ids and their owners: the command line respects the claims the HTTP API made.

Through the API the first principal to use a run id owns it
(:mod:`orchestrator.runowners`). The command line names runs too
(``--run-id``); without this, ``stockade run --run-id`` would start an agent in
the workspace of a run another principal claimed over the API, with its
standing approval grants.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from orchestrator.agent import read_state
from orchestrator.config import StockadeConfig
from orchestrator.errors import NotFoundError
from orchestrator.runid import run_id_problem
from orchestrator.runowners import RunOwners

__all__ = ["check_run_id_owner", "claim_run_id"]


def _taken(run_id: str, owner: str, *, flag: str) -> click.UsageError:
    return click.UsageError(
        f"run id {run_id!r} belongs to principal {owner!r} (the first to use it); use a "
        f"run id of your own, or act as {owner!r} ({flag})"
    )


def check_run_id_owner(config: StockadeConfig, run_id: str, principal: str | None) -> None:
    """Refuse ``run_id`` when a principal other than ``principal`` owns it (any principal,
    when there is none). Claims nothing: a call without a principal cannot own a run."""
    if not config.tokens_db.exists():  # no server has claimed anything on this state
        return
    owner = RunOwners(config.tokens_db).owner(run_id)
    if owner is not None and owner != principal:
        raise _taken(run_id, owner, flag="--principal")


def _recorded_principal(state_dir: Path, run_id: str) -> str | None:
    """The principal run ``run_id``'s checkpoint records; None when there is no such run."""
    try:
        return read_state(state_dir, run_id).principal
    except NotFoundError:
        return None


def claim_run_id(config: StockadeConfig, run_id: str, principal: str) -> None:
    """Claim ``run_id`` for ``principal`` as the API would, or refuse it (a usage error)
    when it is no valid run id or another principal owns it, by the API's claims or by
    the principal the run's own checkpoint records (such a run is its principal's even if
    nobody claimed it here). For the entrances that act in one named run."""
    if problem := run_id_problem(run_id):
        raise click.UsageError(problem)
    owners = RunOwners(config.tokens_db)

    def recorded() -> str | None:
        return _recorded_principal(config.state_dir, run_id)

    async def claimed() -> bool:
        return await owners.claim(run_id, principal, recorded=lambda: asyncio.to_thread(recorded))

    if not asyncio.run(claimed()):
        owner = owners.owner(run_id) or recorded() or "another principal"
        raise _taken(run_id, owner, flag="--principal")

"""Removing containers nobody will ever use again.

A Stockade container is garbage when its owner process is gone or its
deadline has passed. The backend reaps at start-up; ``stockade cleanup`` reaps
on demand. A crashed (even SIGKILLed) orchestrator leaks nothing for long.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from orchestrator.sandbox.engine import engine_errors
from orchestrator.sandbox.labels import (
    DEADLINE_LABEL,
    OWNER_LABEL,
    PLATFORM_LABEL,
    PLATFORM_VALUE,
    Owner,
)

__all__ = ["ReapedContainer", "reap"]

_log = logging.getLogger(__name__)
# How long a reap waits for a container another reaper is removing.
_REMOVAL_WAIT_S = 30


@dataclass(frozen=True, kw_only=True)
class ReapedContainer:
    """A container the reaper removed, and why."""

    id: str
    reason: str


def _reason(labels: dict[str, str], now: float, *, everything: bool) -> str | None:
    if everything:
        return "removal of all Stockade containers requested"
    owner = Owner.parse(labels.get(OWNER_LABEL, ""))
    if owner is not None and owner.is_alive() is False:
        return f"owner process {owner.pid} is gone"
    try:
        deadline = float(labels[DEADLINE_LABEL])
    except (KeyError, ValueError):
        return "no valid deadline label" if owner is None else None
    if deadline < now:
        return "deadline passed"
    return None


def _being_removed(exc: docker.errors.APIError) -> bool:
    """Whether the engine refused a removal because one is already under way (409)."""
    return exc.status_code == 409 and "already in progress" in str(exc.explanation or "")


def _wait_removed(client: docker.DockerClient, container: str) -> None:
    try:
        client.api.wait(container, timeout=_REMOVAL_WAIT_S, condition="removed")
    except docker.errors.NotFound:
        pass  # already gone
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _log.warning("%s, being removed by another, is not gone yet: %s", container[:12], exc)


def reap(client: docker.DockerClient, *, everything: bool = False) -> list[ReapedContainer]:
    """Remove Stockade containers whose owner is gone or whose deadline passed.

    ``everything`` removes every Stockade container, live owners' included.
    """
    now = time.time()
    reaped: list[ReapedContainer] = []
    with engine_errors("reaper.list"):
        containers = client.api.containers(
            all=True, filters={"label": f"{PLATFORM_LABEL}={PLATFORM_VALUE}"}
        )
    for info in containers:
        reason = _reason(info.get("Labels") or {}, now, everything=everything)
        if reason is None:
            continue
        try:
            client.api.remove_container(info["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if _being_removed(exc):
                # Another reaper (an orchestrator starting beside this one, `stockade
                # cleanup`) is removing it: gone once that ends, which is waited for, so
                # a caller that reaped finds no leftover.
                _wait_removed(client, info["Id"])
            else:
                _log.warning("could not reap %s: %s", info["Id"][:12], exc)
            continue
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            # One container that cannot go does not stop the others; the next reap retries.
            _log.warning("could not reap %s: %s", info["Id"][:12], exc)
            continue
        reaped.append(ReapedContainer(id=info["Id"], reason=reason))
    return reaped

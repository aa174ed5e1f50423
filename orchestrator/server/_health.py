"""``/healthz`` (the process answers) and ``/readyz`` (it can take tool calls now).

Readiness: the Docker engine answers, each warm pool the tools use has
containers up (this process's, found by their owner label), the audit log can
be opened for appending, the approval database answers. Probes need no
token and say no more than which check failed: the details go to the log.
Since anyone may send them, one check runs at a time and its answer serves
every probe for :data:`FRESH_S` (:class:`ReadinessProbe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from fastapi import APIRouter, Response

from orchestrator.platform import Platform
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.engine import connect_engine
from orchestrator.sandbox.labels import OWNER_LABEL, PROFILE_LABEL, current_owner
from orchestrator.server._problems import (
    PROBLEM_HEADERS,
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemCode,
    problem,
)
from orchestrator.server._state import State
from orchestrator.strict import StrictModel

__all__ = [
    "FRESH_S",
    "Check",
    "Health",
    "NotReady",
    "Readiness",
    "ReadinessProbe",
    "readiness",
    "router",
]

_log = logging.getLogger(__name__)
_ENGINE_TIMEOUT_S = 2.0

FRESH_S = 1.0
"""How long one readiness answer serves every probe. A check asks the engine (two or three
requests), SQLite and the audit log, in three threads of the default pool that tool calls
share (rate limits, workspace transfers, approvals); probes need no token, and fifty at
once ran fifty checks side by side."""

router = APIRouter(tags=["health"])
"""The probes."""


class Health(StrictModel):
    """The process answers."""

    status: str
    """Always ``ok``."""


class Check(StrictModel):
    """One readiness check."""

    ok: bool
    """Whether it passed."""
    detail: str
    """What was found."""


class Readiness(StrictModel):
    """Every readiness check passed."""

    ready: bool
    """Always true here (a failure answers 503 with :class:`NotReady`)."""
    checks: dict[str, Check]
    """Each check by name: engine, pools, audit, approvals."""


class NotReady(Problem):
    """A problem (``not_ready``) with the checks, so a probe's log shows which failed."""

    checks: dict[str, Check]
    """Each check by name."""


def _engine_and_pools(platform: Platform) -> dict[str, Check]:
    """Blocking: ping the engine, count this process's running containers per profile."""
    if not isinstance(platform.sandbox, DockerBackend):
        kind = type(platform.sandbox).__name__
        return {
            "engine": Check(ok=True, detail=f"no engine: sandboxes from {kind}"),
            "pools": Check(ok=True, detail=f"no pools: sandboxes from {kind}"),
        }
    try:
        client = connect_engine(timeout_s=_ENGINE_TIMEOUT_S)
    except Exception:
        _log.warning("readiness: the Docker engine does not answer", exc_info=True)
        failed = Check(ok=False, detail="the Docker engine does not answer")
        return {"engine": failed, "pools": Check(ok=False, detail="not checked: no engine")}
    try:
        own = f"{OWNER_LABEL}={current_owner().label()}"
        running = client.api.containers(filters={"label": own, "status": "running"})
    except Exception:
        _log.warning("readiness: cannot list containers", exc_info=True)
        return {
            "engine": Check(ok=False, detail="the Docker engine does not list containers"),
            "pools": Check(ok=False, detail="not checked: no container list"),
        }
    finally:
        client.close()
    up = Counter(container.get("Labels", {}).get(PROFILE_LABEL) for container in running)
    used = {spec.profile for spec in platform.registry.tools()}
    pooled = sorted(
        name for name, profile in platform.profiles.items() if name in used and profile.pool_size
    )
    # A pool whose replacement is being started (a pool of one, right after a call)
    # still serves: the next call waits for that start, as the first one in it would.
    starting: Counter[str] = Counter()
    for size in platform.sandbox.pool_sizes():  # a profile may have several pools (images)
        starting[size.profile] += size.starting
    cold = [name for name in pooled if not up[name] and not starting[name]]
    engine = Check(ok=True, detail="answers")
    if cold:
        return {"engine": engine, "pools": Check(ok=False, detail=f"no container up: {cold}")}
    counts = (
        ", ".join(
            f"{name} {up[name]}" + (f" (+{starting[name]} starting)" if starting[name] else "")
            for name in pooled
        )
        or "none configured"
    )
    return {"engine": engine, "pools": Check(ok=True, detail=f"containers up: {counts}")}


def _audit(platform: Platform) -> Check:
    """Blocking: whether the audit log can be opened for appending (nothing is written)."""
    path = platform.config.audit_path
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        _log.warning("readiness: audit log %s: %s", path, exc)
        return Check(ok=False, detail="the audit log cannot be opened for appending")
    return Check(ok=True, detail="writable")


def _approvals(platform: Platform) -> Check:
    """Blocking: whether the approval database answers a query."""
    try:
        platform.approvals.get("readiness-probe")
    except Exception:
        _log.warning("readiness: approval database", exc_info=True)
        return Check(ok=False, detail="the approval database does not answer")
    return Check(ok=True, detail="answers")


async def readiness(platform: Platform) -> dict[str, Check]:
    """Every readiness check of ``platform``, run off the event loop, side by side."""
    sandbox, audit, approvals = await asyncio.gather(
        asyncio.to_thread(_engine_and_pools, platform),
        asyncio.to_thread(_audit, platform),
        asyncio.to_thread(_approvals, platform),
    )
    return {**sandbox, "audit": audit, "approvals": approvals}


class ReadinessProbe:
    """The readiness of one platform: one check at a time, its answer kept for :data:`FRESH_S`."""

    def __init__(self, platform: Platform, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._platform = platform
        self._clock = clock
        self._answer: tuple[float, dict[str, Check]] | None = None
        self._running: asyncio.Task[dict[str, Check]] | None = None

    async def checks(self) -> dict[str, Check]:
        """Every check's result: the latest while fresh, else the check under way or a new one."""
        if self._answer is not None and self._clock() - self._answer[0] < FRESH_S:
            return self._answer[1]
        if self._running is None:
            self._running = asyncio.create_task(self._check(), name="readiness")
        # A probe that goes away leaves the check to the others waiting for it.
        return await asyncio.shield(self._running)

    async def _check(self) -> dict[str, Check]:
        try:
            checks = await readiness(self._platform)
            self._answer = (self._clock(), checks)
            return checks
        finally:
            self._running = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": NotReady,
            "description": "A check failed",
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
    },
)
async def readyz(state: State) -> Readiness | Response:
    """The server can take tool calls: engine, warm pools, audit log, approval database."""
    checks = await state.readiness.checks()
    if all(check.ok for check in checks.values()):
        return Readiness(ready=True, checks=checks)
    failed = ", ".join(name for name, check in checks.items() if not check.ok)
    base = problem(503, ProblemCode.NOT_READY, f"not ready: {failed}")
    body = NotReady(**base.model_dump(), checks=checks)
    return Response(
        body.model_dump_json(exclude_none=True),
        status_code=503,
        headers=PROBLEM_HEADERS,
        media_type=PROBLEM_MEDIA_TYPE,
    )

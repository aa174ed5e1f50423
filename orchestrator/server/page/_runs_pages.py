"""The run timeline pages under ``/ui/runs``: the runs list, and one page per run.

Signed in like the approval page (a session from an API token), with the
``runs:read`` permission (caller, viewer, admin). A caller or viewer sees the
runs of its own principal, an admin every run; another principal's run
answers 404, as a run that does not exist does, so the page never confirms
that someone else's run id is in use (the API answers 403 there: its
clients chose the run id and need to know it is taken).

Runs are read through the agent package's readers (:func:`list_runs`,
:func:`read_events`, the server's :class:`~orchestrator.server._runs.Runs`
for runs under way), the calls' decisions and approvals through the audit
log's :func:`~orchestrator.audit.timeline.call_timeline` (kept between a
page's refreshes: ``_call_reads``). A page of a run
under way asks for its timeline again every second (``static/runs.js``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from orchestrator.agent import AgentEvent, RunState, RunStatus, RunSummary, list_runs, read_events
from orchestrator.artifacts import ARTIFACT_ID_PATTERN
from orchestrator.errors import NotFoundError
from orchestrator.runid import RUN_ID_PATTERN
from orchestrator.server import _artifacts_api
from orchestrator.server._problems import ProblemCode, ProblemError
from orchestrator.server._roles import Identity, Permission, Role
from orchestrator.server._state import ServerState
from orchestrator.server.page._call_reads import CallReads
from orchestrator.server.page._render import harden, problem_page, render
from orchestrator.server.page._sessions import Session
from orchestrator.server.page._timeline import Timeline, build_timeline

__all__ = ["LIST_LIMIT", "RUNS_PATH", "add_runs_routes"]

RUNS_PATH = "/ui/runs"
"""Where the runs list is."""
LIST_LIMIT = 500
"""Most runs the list shows (newest first)."""
TIMELINE_POLL_MS = 1000
"""How often a page of a run under way asks for its timeline."""

_RUN_ID = re.compile(RUN_ID_PATTERN)
_ARTIFACT_ID = re.compile(ARTIFACT_ID_PATTERN)
_UNFINISHED = "unfinished"
_STATUSES = (_UNFINISHED, *(status.value for status in RunStatus))
# How long a refresh waits for a live run's next event before rendering what it has.
_DRAIN_S = 0.02

SignedIn = Callable[[Request], "tuple[Session, Identity] | None"]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.stockade
    return state


def _utc(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _instant(name: str, value: str, *, end: bool) -> float | None:
    """A filter's time (ISO 8601; UTC unless it says otherwise); a date as ``end`` includes it."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ProblemError(
            400,
            ProblemCode.INVALID_REQUEST,
            f"{name}: {value[:60]!r} is not a date or time (ISO 8601: 2026-11-27 or "
            "2026-11-27T14:30)",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    if end and len(value) == 10:  # a day: up to its end
        if moment.date() == datetime.date.max:
            return None  # the last day there is: up to its end is no bound at all
        moment += datetime.timedelta(days=1)
    return moment.timestamp()


def _live(state: ServerState, run_id: str, run: RunState, timeline: Timeline) -> bool:
    """Whether more may come: no final event yet, and the run is under way or may resume."""
    if timeline.finished:
        return False
    return state.runs.handle(run_id) is not None or not run.status.finished


def _now(state: ServerState, run: RunSummary) -> RunSummary:
    """``run`` with the state of its run under way here (its checkpoint may be a step behind)."""
    handle = state.runs.handle(run.run_id)
    if handle is None:
        return run
    now = handle.state
    return dataclasses.replace(
        run, status=now.status.value, iterations=now.iteration, tokens=now.usage.total_tokens
    )


def _visible(identity: Identity, principal: str) -> bool:
    return Role.ADMIN in identity.roles or principal == identity.principal


async def _events_now(state: ServerState, run_id: str) -> list[AgentEvent]:
    """The run's events so far, without waiting for the next one."""
    state_dir: Path = state.platform.config.state_dir
    if state.runs.handle(run_id) is None:
        try:
            return await asyncio.to_thread(read_events, state_dir, run_id)
        except NotFoundError:  # checkpointed, no log line written yet
            return []
    # Under way: its events since the start are in memory (the log is written with the
    # next checkpoint). The stream replays them at once, then waits for the next: the
    # short wait ends the replay.
    events: list[AgentEvent] = []
    stream = state.runs.events(run_id)
    try:
        while True:
            try:
                async with asyncio.timeout(_DRAIN_S if events else 5.0):
                    events.append(await anext(stream))
            except (StopAsyncIteration, TimeoutError):
                break
    except NotFoundError:
        pass
    finally:
        await stream.aclose()
    return events


class RunsPages:
    """The handlers of the runs pages."""

    def __init__(self, signed_in: SignedIn) -> None:
        """Pages for sessions ``signed_in`` finds (the approval page's sessions)."""
        self._signed_in = signed_in
        self._calls = CallReads()

    def _reader(
        self, request: Request, *, page: bool = True
    ) -> tuple[Session, Identity] | Response:
        """The session and identity, or the answer: sign in first, or 403 without runs:read.

        Without a session a ``page`` sends the browser to the sign-in form; a
        fragment answers 401 (its script then does).
        """
        found = self._signed_in(request)
        if found is None:
            if page:
                return harden(RedirectResponse("/ui/sign-in", status_code=303))
            return problem_page(request, 401, ProblemCode.UNAUTHENTICATED, "sign in again")
        identity = found[1]
        if not identity.can(Permission.READ_RUNS):
            roles = ", ".join(sorted(identity.roles)) or "none"
            return problem_page(
                request,
                403,
                ProblemCode.FORBIDDEN,
                f"{identity.principal}'s token (roles: {roles}) may not read runs; that needs "
                "the caller, viewer or admin role",
            )
        return found

    async def runs(self, request: Request) -> Response:
        """The runs list, filtered by status, principal and start time."""
        found = self._reader(request)
        if isinstance(found, Response):
            return found
        session, identity = found
        query = request.query_params
        status = query.get("status", "")
        principal = query.get("principal", "").strip()
        try:
            if status and status not in _STATUSES:
                raise ProblemError(
                    400,
                    ProblemCode.INVALID_REQUEST,
                    f"status: {status[:40]!r} is none of {', '.join(_STATUSES)}",
                )
            since = _instant("since", query.get("since", ""), end=False)
            until = _instant("until", query.get("until", ""), end=True)
        except ProblemError as exc:
            return problem_page(request, exc.status, ProblemCode.INVALID_REQUEST, exc.detail)
        state = _state(request)
        recorded = await asyncio.to_thread(list_runs, state.platform.config.state_dir)
        every = [_now(state, run) for run in recorded]

        def wanted(run: RunSummary) -> bool:
            if not _visible(identity, run.principal):
                return False
            if principal and run.principal != principal:
                return False
            if status == _UNFINISHED:
                if RunStatus(run.status).finished:
                    return False
            elif status and run.status != status:
                return False
            if since is not None and run.started_at < since:
                return False
            return until is None or run.started_at < until

        shown = [run for run in every if wanted(run)]
        return render(
            "runs.html",
            principal=identity.principal,
            csrf=session.csrf,
            admin=Role.ADMIN in identity.roles,
            approver=identity.can(Permission.DECIDE_APPROVALS),
            runs=shown[:LIST_LIMIT],
            total=len(shown),
            limit=LIST_LIMIT,
            statuses=_STATUSES,
            filters={
                "status": status,
                "principal": principal,
                "since": query.get("since", ""),
                "until": query.get("until", ""),
            },
            utc=_utc,
        )

    async def _run(
        self, request: Request, run_id: str, *, page: bool = True
    ) -> tuple[Session, Identity, RunState, Timeline] | Response:
        found = self._reader(request, page=page)
        if isinstance(found, Response):
            return found
        session, identity = found
        state = _state(request)
        missing = problem_page(request, 404, ProblemCode.NOT_FOUND, f"no run {run_id[:130]!r}")
        if not _RUN_ID.fullmatch(run_id):
            return missing
        try:
            run = await state.runs.state(run_id)
        except NotFoundError:
            return missing
        if not _visible(identity, run.principal):
            return missing  # another principal's run: as if there were none
        events = await _events_now(state, run_id)
        calls = await self._calls.calls(state.platform.config.audit_path, run_id, len(events))
        runtimes = {name: profile.runtime for name, profile in state.platform.profiles.items()}
        return session, identity, run, build_timeline(events, calls, runtimes)

    def _context(
        self, identity: Identity, run: RunState, timeline: Timeline, live: bool
    ) -> dict[str, Any]:
        return {
            "run": run,
            "timeline": timeline,
            "live": live,
            "utc": _utc,
            "viewer_principal": identity.principal,
        }

    async def run(self, run_id: str, request: Request) -> Response:
        """One run's page."""
        found = await self._run(request, run_id)
        if isinstance(found, Response):
            return found
        session, identity, run, timeline = found
        live = _live(_state(request), run_id, run, timeline)
        return render(
            "run.html",
            principal=identity.principal,
            csrf=session.csrf,
            approver=identity.can(Permission.DECIDE_APPROVALS),
            poll_ms=TIMELINE_POLL_MS,
            **self._context(identity, run, timeline, live),
        )

    async def timeline(self, run_id: str, request: Request) -> Response:
        """The run's timeline alone, for the page's refreshes."""
        found = await self._run(request, run_id, page=False)
        if isinstance(found, Response):
            return found
        _, identity, run, timeline = found
        live = _live(_state(request), run_id, run, timeline)
        return render("timeline.html", **self._context(identity, run, timeline, live))

    async def artifact(self, run_id: str, artifact_id: str, request: Request) -> Response:
        """An artifact's bytes, as ``GET /v1/runs/{id}/artifacts/{aid}`` serves them."""
        found = self._reader(request)
        if isinstance(found, Response):
            return found
        identity = found[1]
        state = _state(request)
        no_run = problem_page(request, 404, ProblemCode.NOT_FOUND, f"no run {run_id[:130]!r}")
        if not _RUN_ID.fullmatch(run_id) or await _hidden(state, identity, run_id):
            return no_run
        if not _ARTIFACT_ID.fullmatch(artifact_id):
            return problem_page(request, 404, ProblemCode.NOT_FOUND, "no such artifact")
        try:
            return await _artifacts_api.get_artifact(run_id, artifact_id, state, identity)
        except ProblemError as exc:
            if exc.code is ProblemCode.RUN_OWNED_BY_ANOTHER:
                # Another principal's run of tool calls alone (no run state): as if there
                # were none, like every other run of theirs on these pages.
                return no_run
            return problem_page(request, exc.status, exc.code, exc.detail)


async def _hidden(state: ServerState, identity: Identity, run_id: str) -> bool:
    """Whether ``run_id`` is an agent run of a principal ``identity`` may not see."""
    try:
        run = await state.runs.state(run_id)
    except NotFoundError:
        return False
    return not _visible(identity, run.principal)


def add_runs_routes(router: APIRouter, signed_in: SignedIn) -> None:
    """Add the runs pages to the page's ``router`` (its prefix is ``/ui``)."""
    pages = RunsPages(signed_in)
    router.add_api_route("/runs", pages.runs, methods=["GET"])
    router.add_api_route("/runs/{run_id}", pages.run, methods=["GET"])
    router.add_api_route("/runs/{run_id}/timeline", pages.timeline, methods=["GET"])
    router.add_api_route("/runs/{run_id}/artifacts/{artifact_id}", pages.artifact, methods=["GET"])

"""The approval page's routes under ``/ui``: sign in, see pending requests, decide them.

Nothing here decides anything itself: a form posted here becomes the very
call ``POST /v1/approvals/{id}/approve`` (or ``/deny``) makes, with the
signed-in token's identity, so the schema check of edited arguments,
``server.self_approval``, the 409 for a request decided elsewhere and the
audit log's ``decided_by`` are the API's. What the page adds is the
browser's side: a session cookie instead of a bearer header, and a CSRF
token on every form.

The list updates itself by polling a fragment of the page (see
``static/approvals.js`` for why polling).

The same sign-in opens the run timeline pages (``_runs_pages``) to tokens
that may read runs (caller, viewer, admin); the approvals stay approver- or
admin-only (403 for a session of any other token).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from orchestrator.server import _approvals_api
from orchestrator.server._bind import is_loopback_host
from orchestrator.server._limits import json_depth
from orchestrator.server._problems import ProblemCode, ProblemError
from orchestrator.server._roles import Identity, Permission, Role
from orchestrator.server._state import ServerState
from orchestrator.server.page._render import harden, problem_page, render, static_file
from orchestrator.server.page._runs_pages import RUNS_PATH, add_runs_routes
from orchestrator.server.page._sessions import (
    SESSION_LIFETIME_S,
    SIGN_IN_LIFETIME_S,
    Session,
    Sessions,
    same_secret,
)

__all__ = ["PAGE_PREFIX", "SESSION_COOKIE", "SIGN_IN_COOKIE", "page_router"]

PAGE_PREFIX = "/ui"
"""Where the page lives."""
SESSION_COOKIE = "stockade_session"
"""The signed-in browser's cookie."""
SIGN_IN_COOKIE = "stockade_sign_in"
"""The sign-in form's CSRF nonce cookie."""
POLL_MS = 1000
"""How often the page asks for the pending list (one indexed SQLite query each)."""

_SIGN_IN = f"{PAGE_PREFIX}/sign-in"
_APPROVALS = f"{PAGE_PREFIX}/approvals"
_MAX_FIELDS = 8
_DONE = {"approved": "Approved.", "denied": "Denied.", "signed-out": "Signed out."}


class _Refused(Exception):
    """A request the page refuses before doing anything (answered by :func:`problem_page`)."""

    def __init__(self, status: int, code: ProblemCode, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.stockade
    return state


def _secure(request: Request) -> bool:
    """Whether cookies must be ``Secure``: unless the server and the browser are on loopback."""
    return (
        request.url.scheme == "https"
        or not is_loopback_host(_state(request).settings.host)
        or not is_loopback_host(request.url.hostname or "")
    )


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PAGE_PREFIX,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _redirect(location: str) -> Response:
    return harden(RedirectResponse(location, status_code=303))


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields; refused unless url-encoded, each field once, few of them.

    An empty body has no fields (and so no CSRF token: refused by the caller).
    """
    # The body's size was bounded by RequestLimits before it got here.
    body = await request.body()
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not body:
        return {}
    if media_type != "application/x-www-form-urlencoded":
        raise _Refused(415, ProblemCode.INVALID_REQUEST, "forms must be url-encoded")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(400, ProblemCode.INVALID_REQUEST, "the form cannot be read") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise _Refused(400, ProblemCode.INVALID_REQUEST, f"the form gives {name!r} twice")
        fields[name] = value
    return fields


def _may_sign_in(identity: Identity) -> bool:
    """Whether the token opens any page: the approvals, or the runs."""
    return identity.can(Permission.DECIDE_APPROVALS) or identity.can(Permission.READ_RUNS)


def _home(identity: Identity) -> str:
    """Where a signed-in browser lands: the approvals for an approver, else the runs."""
    return _APPROVALS if identity.can(Permission.DECIDE_APPROVALS) else RUNS_PATH


def _csrf_refused() -> _Refused:
    return _Refused(
        403,
        ProblemCode.FORBIDDEN,
        "the form's CSRF token is missing or wrong; reload the page and try again",
    )


class _Page:
    """The page's handlers, over one store of sessions."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def signed_in(self, request: Request) -> tuple[Session, Identity] | None:
        """The browser's session and who it acts for; None unless its token still opens a page.

        A page then checks its own permission (:meth:`approver` for the approvals).
        """
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        token = _state(request).tokens.authenticate(session.token)
        identity = None
        if token is not None:
            identity = Identity(principal=token.principal, roles=token.roles, token_id=token.id)
        if identity is None or not _may_sign_in(identity):
            self.sessions.close(session.id)  # revoked since the sign-in
            return None
        return session, identity

    def approver(self, request: Request) -> tuple[Session, Identity] | Response:
        """The session of someone who may decide approvals; else where to send the browser.

        Not signed in: the sign-in page. Signed in with a caller's or viewer's
        token (for the runs pages): refused, 403.
        """
        found = self.signed_in(request)
        if found is None:
            return _redirect(_SIGN_IN)
        identity = found[1]
        if not identity.can(Permission.DECIDE_APPROVALS):
            roles = ", ".join(sorted(identity.roles)) or "none"
            return problem_page(
                request,
                403,
                ProblemCode.FORBIDDEN,
                f"{identity.principal}'s token (roles: {roles}) may not decide approvals; "
                f"the approvals page needs the {Role.APPROVER.value} or {Role.ADMIN.value} role.",
            )
        return found

    def sign_in_page(
        self,
        request: Request,
        status: int = 200,
        error: str | None = None,
        nonce: str | None = None,
    ) -> Response:
        """The sign-in form; a new CSRF nonce (and its cookie) unless ``nonce`` is kept."""
        fresh = nonce is None
        nonce = nonce or self.sessions.sign_in_nonce()
        response = render(
            "sign_in.html",
            status,
            csrf=self.sessions.sign_in_csrf(nonce),
            error=error,
            done=_DONE.get(request.query_params.get("done", "")),
            insecure=_secure(request) and request.url.scheme != "https",
        )
        if fresh:
            _set_cookie(request, response, SIGN_IN_COOKIE, nonce, SIGN_IN_LIFETIME_S)
        return response

    async def approvals_page(
        self,
        request: Request,
        session: Session,
        identity: Identity,
        *,
        status: int = 200,
        problem: str | None = None,
        drafts: dict[str, str] | None = None,
    ) -> Response:
        """The page of pending requests, with a problem and kept drafts after a refusal."""
        listed = await _approvals_api.list_approvals(
            state=_state(request), _identity=identity, status=_approvals_api.StatusFilter.PENDING
        )
        return render(
            "approvals.html",
            status,
            principal=identity.principal,
            reads_runs=identity.can(Permission.READ_RUNS),
            csrf=session.csrf,
            requests=listed.approvals,
            now=time.time(),
            poll_ms=POLL_MS,
            problem=problem,
            done=_DONE.get(request.query_params.get("done", "")),
            drafts=drafts or {},
        )

    async def root(self, request: Request) -> Response:
        found = self.signed_in(request)
        return _redirect(_APPROVALS if found is None else _home(found[1]))

    async def static(self, name: str, request: Request) -> Response:
        found = static_file(name)
        if found is None:
            return problem_page(request, 404, ProblemCode.NOT_FOUND, f"no static file {name}")
        return found

    async def sign_in_form(self, request: Request) -> Response:
        found = self.signed_in(request)
        if found is not None:
            return _redirect(_home(found[1]))
        return self.sign_in_page(request)

    async def sign_in(self, request: Request) -> Response:
        try:
            fields = await _form(request)
            nonce = request.cookies.get(SIGN_IN_COOKIE)
            if not nonce or not same_secret(fields.get("csrf"), self.sessions.sign_in_csrf(nonce)):
                raise _csrf_refused()
        except _Refused as refused:
            return problem_page(request, refused.status, refused.code, refused.detail)
        token = fields.get("token", "").strip()
        info = _state(request).tokens.authenticate(token) if token else None
        if info is None:
            return self.sign_in_page(request, 401, "That token is unknown or revoked.", nonce)
        identity = Identity(principal=info.principal, roles=info.roles, token_id=info.id)
        if not _may_sign_in(identity):
            roles = ", ".join(sorted(identity.roles)) or "none"
            return self.sign_in_page(
                request,
                403,
                f"{identity.principal}'s token (roles: {roles}) may neither read runs nor "
                "decide approvals; signing in here needs the caller, viewer, approver or "
                "admin role.",
                nonce,
            )
        session = self.sessions.open(token)
        response = _redirect(_home(identity))
        _set_cookie(request, response, SESSION_COOKIE, session.id, SESSION_LIFETIME_S)
        response.delete_cookie(SIGN_IN_COOKIE, path=PAGE_PREFIX)
        return response

    async def sign_out(self, request: Request) -> Response:
        found = self.signed_in(request)
        if found is None:
            return _redirect(_SIGN_IN)
        try:
            fields = await _form(request)
            if not same_secret(fields.get("csrf"), found[0].csrf):
                raise _csrf_refused()
        except _Refused as refused:
            return problem_page(request, refused.status, refused.code, refused.detail)
        self.sessions.close(found[0].id)
        response = _redirect(f"{_SIGN_IN}?done=signed-out")
        response.delete_cookie(SESSION_COOKIE, path=PAGE_PREFIX)
        return response

    async def approvals(self, request: Request) -> Response:
        found = self.approver(request)
        if isinstance(found, Response):
            return found
        return await self.approvals_page(request, *found)

    async def cards(self, request: Request) -> Response:
        if self.signed_in(request) is None:
            # The script sends the browser to the sign-in page.
            return problem_page(request, 401, ProblemCode.UNAUTHENTICATED, "sign in again")
        found = self.approver(request)
        if isinstance(found, Response):
            return found
        session, identity = found
        listed = await _approvals_api.list_approvals(
            state=_state(request), _identity=identity, status=_approvals_api.StatusFilter.PENDING
        )
        return render(
            "cards.html", csrf=session.csrf, requests=listed.approvals, now=time.time(), drafts={}
        )

    async def approve(self, request_id: str, request: Request) -> Response:
        return await self._decide(request, request_id, approve=True)

    async def deny(self, request_id: str, request: Request) -> Response:
        return await self._decide(request, request_id, approve=False)

    async def _decide(self, request: Request, request_id: str, *, approve: bool) -> Response:
        """A decision form, taken as ``/v1/approvals/{id}/approve`` (or ``deny``) takes it."""
        found = self.approver(request)
        if isinstance(found, Response):
            return found
        session, identity = found
        drafts: dict[str, str] = {}
        try:
            fields = await _form(request)
            if not same_secret(fields.get("csrf"), session.csrf):
                raise _csrf_refused()
        except _Refused as refused:
            return problem_page(request, refused.status, refused.code, refused.detail)
        note = fields.get("note", "").strip() or None
        try:
            if approve:
                edited = fields.get("arguments")
                if edited is not None:
                    drafts[request_id] = edited
                body = _approvals_api.Approve(
                    note=note, arguments=None if edited is None else _arguments(request, edited)
                )
                await _approvals_api.approve(request_id, _state(request), identity, body)
            else:
                await _approvals_api.deny(
                    request_id, _state(request), identity, _approvals_api.Deny(note=note)
                )
        except ValidationError as exc:
            # Only the model's own field (the note's length): the arguments are a dict by now.
            problem = "; ".join(str(error["msg"]) for error in exc.errors())
            return await self.approvals_page(
                request, session, identity, status=422, problem=problem, drafts=drafts
            )
        except ProblemError as exc:
            return await self.approvals_page(
                request, session, identity, status=exc.status, problem=exc.detail, drafts=drafts
            )
        return _redirect(f"{_APPROVALS}?done={'approved' if approve else 'denied'}")


def page_router(*, sessions: Sessions | None = None) -> APIRouter:
    """The approval page's routes, with a store of sessions of their own (one per server)."""
    page = _Page(sessions or Sessions())
    router = APIRouter(prefix=PAGE_PREFIX, include_in_schema=False)
    router.add_api_route("", page.root, methods=["GET"])
    router.add_api_route("/static/{name}", page.static, methods=["GET"])
    router.add_api_route("/sign-in", page.sign_in_form, methods=["GET"])
    router.add_api_route("/sign-in", page.sign_in, methods=["POST"])
    router.add_api_route("/sign-out", page.sign_out, methods=["POST"])
    router.add_api_route("/approvals", page.approvals, methods=["GET"])
    router.add_api_route("/approvals/cards", page.cards, methods=["GET"])
    router.add_api_route("/approvals/{request_id}/approve", page.approve, methods=["POST"])
    router.add_api_route("/approvals/{request_id}/deny", page.deny, methods=["POST"])
    add_runs_routes(router, page.signed_in)
    return router


def _not_json(number: str) -> NoReturn:
    # Python's reader takes NaN and Infinity; the approval store refuses them (and the
    # problem would reach the browser bare, the draft lost): refused here as not JSON.
    raise ValueError(f"not a number JSON can carry: {number}")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):  # 1e999
        _not_json(number)
    return value


def _arguments(request: Request, text: str) -> dict[str, Any]:
    """Edited arguments from the form's JSON text; the problem (422) if they are not an object."""
    limit = _state(request).settings.max_json_depth
    if json_depth(text.encode("utf-8"), stop_at=limit + 1) > limit:
        raise ProblemError(
            422, ProblemCode.INVALID_ARGUMENTS, f"the arguments nest deeper than {limit} levels"
        )
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except ValueError as exc:
        raise ProblemError(
            422, ProblemCode.INVALID_ARGUMENTS, f"the arguments are not JSON: {exc}"
        ) from exc
    if not isinstance(value, dict):
        raise ProblemError(
            422, ProblemCode.INVALID_ARGUMENTS, "the arguments must be a JSON object"
        )
    return value

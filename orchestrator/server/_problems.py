"""Errors as ``application/problem+json`` (RFC 9457), each with a stable ``code``.

Every error the server answers has this one shape, whoever raised it (a
route, validation, the router's 404, a bug). Programs branch on ``code``,
which never changes meaning; ``detail`` is for people. Nothing of the
server's insides goes out: no stack trace, no file path, no exception text
from below the API; those stay in the server's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.errors import InfrastructureError, NotFoundError, UsageError
from orchestrator.strict import StrictModel

__all__ = [
    "PROBLEM_HEADERS",
    "PROBLEM_MEDIA_TYPE",
    "CancelledAsUnavailable",
    "FieldProblem",
    "Problem",
    "ProblemCode",
    "ProblemError",
    "install_problem_handlers",
    "problem",
    "problem_response",
    "problem_responses",
]

_log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
"""The media type of every error body."""

PROBLEM_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
"""Headers on every problem, whoever answers it: data, never run or framed. The approval
page's handlers set its own; the router's 404 and 405 under ``/ui``, the body limits'
413 and 400 and a 500 came with none (the detail may quote the request)."""


class ProblemCode(StrEnum):
    """What went wrong, for programs. Values never change meaning."""

    UNAUTHENTICATED = "unauthenticated"
    """No token, or one that is unknown or revoked (401)."""
    FORBIDDEN = "forbidden"
    """The token's roles do not allow this (403)."""
    HOST_NOT_ALLOWED = "host_not_allowed"
    """A request without a token named a host or origin that is not loopback (403)."""
    SELF_APPROVAL_FORBIDDEN = "self_approval_forbidden"
    """The request was raised on the approver's own behalf, and the server forbids that (403)."""
    RUN_OWNED_BY_ANOTHER = "run_owned_by_another_principal"
    """The run id belongs to another principal (403)."""
    NOT_FOUND = "not_found"
    """No such resource or route (404)."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The route exists, the method does not (405)."""
    APPROVAL_NOT_PENDING = "approval_not_pending"
    """The request was already decided, or expired (409)."""
    CALL_ID_IN_USE = "call_id_in_use"
    """A different call with this run and call id is still running (409)."""
    RUN_ID_IN_USE = "run_id_in_use"
    """A run with this id was already started (409)."""
    TOO_MANY_RUNS = "too_many_runs"
    """The principal has as many runs under way as the server allows it (429)."""
    BODY_TOO_LARGE = "body_too_large"
    """The body is over the server's size limit (413)."""
    JSON_TOO_DEEP = "json_too_deep"
    """The body nests arrays and objects deeper than the server's limit (400)."""
    BODY_TIMEOUT = "body_timeout"
    """The body did not arrive whole within the server's limit (408)."""
    INVALID_REQUEST = "invalid_request"
    """The body or parameters do not match the API's schema (422)."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """Edited arguments do not match the tool's schema (422)."""
    UNAVAILABLE = "unavailable"
    """The platform could not do its part (engine, database); worth another try (503)."""
    NOT_READY = "not_ready"
    """A readiness check failed (503)."""
    INTERNAL_ERROR = "internal_error"
    """A bug of the server's; the details are in its log (500)."""
    HTTP_ERROR = "http_error"
    """Any other HTTP-level refusal."""


class FieldProblem(StrictModel):
    """One part of a request that failed validation."""

    loc: tuple[str | int, ...]
    """Where: ``body``, ``query`` or ``path``, then the field path."""
    msg: str
    """What is wrong with it."""


class Problem(StrictModel):
    """An error, as RFC 9457 describes it, with a stable ``code``."""

    type: str
    """A URI naming the kind of problem: ``urn:stockade:problem:<code>``."""
    title: str
    """The HTTP status in words."""
    status: int
    """The HTTP status code."""
    detail: str
    """What happened, for people."""
    code: ProblemCode
    """What happened, for programs."""
    errors: tuple[FieldProblem, ...] | None = None
    """For ``invalid_request``: each field that failed."""


class ProblemError(Exception):
    """Raised by a route to answer with a problem."""

    def __init__(
        self,
        status: int,
        code: ProblemCode,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


def problem(
    status: int,
    code: ProblemCode,
    detail: str,
    errors: tuple[FieldProblem, ...] | None = None,
) -> Problem:
    """The problem document for one error."""
    return Problem(
        type=f"urn:stockade:problem:{code.value}",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        errors=errors,
    )


def problem_response(
    status: int,
    code: ProblemCode,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: tuple[FieldProblem, ...] | None = None,
) -> Response:
    """A ``application/problem+json`` response."""
    body = problem(status, code, detail, errors).model_dump_json(exclude_none=True)
    return Response(
        body,
        status_code=status,
        headers={**PROBLEM_HEADERS, **(headers or {})},
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that may answer these statuses with a problem."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for status in statuses
    }


_STATUS_CODES = {
    401: ProblemCode.UNAUTHENTICATED,
    403: ProblemCode.FORBIDDEN,
    404: ProblemCode.NOT_FOUND,
    405: ProblemCode.METHOD_NOT_ALLOWED,
    413: ProblemCode.BODY_TOO_LARGE,
}


async def _problem_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, ProblemCode.HTTP_ERROR)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(exc.status_code, code, detail, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: pydantic's "input" would echo the request (maybe
    # a secret, maybe a megabyte) back to the client and into logs.
    errors = tuple(
        FieldProblem(loc=tuple(error.get("loc", ())), msg=str(error.get("msg", "invalid")))
        for error in exc.errors()
    )
    return problem_response(
        422,
        ProblemCode.INVALID_REQUEST,
        "the request does not match the API's schema; see errors",
        errors=errors,
    )


async def _not_found(_request: Request, exc: Exception) -> Response:
    return problem_response(404, ProblemCode.NOT_FOUND, str(exc))


async def _usage_error(_request: Request, exc: Exception) -> Response:
    return problem_response(422, ProblemCode.INVALID_REQUEST, str(exc))


async def _infrastructure_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfrastructureError)
    # The path is the client's, decoded: quoted, it carries no control character to a log.
    _log.error("%s %r: %s", request.method, request.url.path, exc)
    headers = {"Retry-After": "1"} if exc.retryable else None
    return problem_response(
        503,
        ProblemCode.UNAVAILABLE,
        f"the platform could not do its part ({exc.code.value} in {exc.op})",
        headers=headers,
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server's log (uvicorn logs it as well); the
    # client learns only that it was not its fault.
    _log.error("%s %r failed", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, ProblemCode.INTERNAL_ERROR, "the server failed to handle the request; see its log"
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(UsageError, _usage_error)
    app.add_exception_handler(InfrastructureError, _infrastructure_error)
    app.add_exception_handler(Exception, _internal_error)


class CancelledAsUnavailable:
    """A request cancelled before its answer (the server stopping) answers a 503 problem.

    When the shutdown grace ends, uvicorn cancels what is still running (calls
    waiting for approval) and would answer a plain-text 500. The client
    should rather learn that the server went away and that a retry (the same
    run and call id) finds the approval request again. The cancellation goes on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, tracking)
        except asyncio.CancelledError:
            if not started:
                await problem_response(
                    503,
                    ProblemCode.UNAVAILABLE,
                    "the server stopped before the request was answered; try again (a tool "
                    "call with the same run and call id finds its approval request again)",
                    headers={"Retry-After": "5"},
                )(scope, receive, send)
            raise

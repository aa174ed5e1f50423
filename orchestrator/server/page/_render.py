"""How the approval page answers: autoescaped templates, its static files, its security headers.

Every value that comes from a request, a model or a policy (arguments,
notes, tool names, reasons) goes through Jinja2's autoescaping, and the
Content-Security-Policy allows no inline script, no script from anywhere
but this server, no framing: a value that slipped through would still be
inert text. The script and style sheet are files of the package, read once.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orchestrator.display import json_for_people
from orchestrator.server._problems import ProblemCode, problem_response
from orchestrator.server.page._timeline import inert_text

__all__ = [
    "SECURITY_HEADERS",
    "harden",
    "problem_page",
    "render",
    "static_file",
    "waited",
]

_HERE = Path(__file__).resolve().parent.parent
_TEMPLATES = _HERE / "templates"
_STATIC = _HERE / "static"

SECURITY_HEADERS: dict[str, str] = {
    # Only this server's own script and style; forms post only back here; no frames.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Pages carry CSRF tokens and pending arguments: never kept by a cache.
    "Cache-Control": "no-store",
}
"""Headers on every answer of the page."""


def waited(seconds: float) -> str:
    """A duration for people: ``42 s``, ``3 min 5 s``, ``2 h 4 min``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,  # every template, whatever its name
    undefined=StrictUndefined,  # a misspelt variable fails the test, not the page silently
    trim_blocks=True,
    lstrip_blocks=True,
)
# Arguments to show and edit: a character that would hide or reorder text is shown as its
# escape, which reads back as the same value when the arguments are edited.
_ENV.filters["pretty"] = json_for_people
_ENV.filters["inert"] = inert_text  # untrusted run text: control sequences removed
_ENV.globals["waited"] = waited

_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Read once: a handful of small files, served from memory, never a path from a request.
_STATIC_FILES: dict[str, tuple[bytes, str]] = {
    path.name: (path.read_bytes(), _STATIC_TYPES[path.suffix])
    for path in sorted(_STATIC.iterdir())
    if path.suffix in _STATIC_TYPES
}


def harden(response: Response) -> Response:
    """``response`` with the page's security headers."""
    response.headers.update(SECURITY_HEADERS)
    return response


def render(template: str, status: int = 200, **context: Any) -> Response:
    """A template rendered to an HTML answer, hardened."""
    body = _ENV.get_template(template).render(**context)
    return harden(HTMLResponse(body, status_code=status))


def static_file(name: str) -> Response | None:
    """One of the page's static files, hardened; None if there is no such file."""
    found = _STATIC_FILES.get(name)
    if found is None:
        return None
    body, media_type = found
    response = harden(Response(body, media_type=media_type))
    # The files change only with the package; a short cache saves a request a poll.
    response.headers["Cache-Control"] = "max-age=300"
    return response


def problem_page(request: Request, status: int, code: ProblemCode, detail: str) -> Response:
    """A refusal: an HTML page for a browser, ``application/problem+json`` for a program."""
    if "text/html" in request.headers.get("accept", ""):
        return render(
            "problem.html",
            status,
            code_number=status,
            title=HTTPStatus(status).phrase,
            code=code.value,
            detail=detail,
        )
    return harden(problem_response(status, code, detail))

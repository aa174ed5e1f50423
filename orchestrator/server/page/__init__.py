"""The web pages: pending approvals decided by a signed-in approver, and the run timelines.

Served by ``stockade serve`` under ``/ui`` (see :func:`page_router`). A
person signs in with an API token and gets a session cookie; every form
carries a CSRF token bound to the session. The approvals page (approver or
admin) decides as ``/v1/approvals`` does, with the same checks and audit
record; the runs pages (caller, viewer or admin: ``runs:read``) show the
runs of the token's principal (an admin's: every run), one page per run.
"""

from orchestrator.server.page._render import SECURITY_HEADERS
from orchestrator.server.page._routes import (
    PAGE_PREFIX,
    POLL_MS,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    page_router,
)
from orchestrator.server.page._sessions import SESSION_LIFETIME_S, Session, Sessions

__all__ = [
    "PAGE_PREFIX",
    "POLL_MS",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "SIGN_IN_COOKIE",
    "Session",
    "Sessions",
    "page_router",
]

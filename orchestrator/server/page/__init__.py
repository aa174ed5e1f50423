"""The approval page: pending approval requests in a browser, decided by a signed-in approver.

Served by ``stockade serve`` under ``/ui`` (see :func:`page_router`). A
person signs in with an approver (or admin) API token and gets a session
cookie; every form carries a CSRF token bound to the session; each decision
is the one ``/v1/approvals`` takes, with the same checks and audit record.
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

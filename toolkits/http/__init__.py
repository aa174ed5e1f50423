"""The ``http`` toolkit: fetch a URL through the orchestrator's egress proxy.

Its tools run under the ``http`` sandbox profile, which must allow egress to
the hosts an organisation permits; the sandbox itself has no network, so every
request goes through the proxy (``HTTP(S)_PROXY``), which enforces the list.

``urllib.request`` is imported by :func:`fetch` itself, not with the toolkit:
every pooled tools container's warm host imports all toolkits before its
call, and this one import (``http.client``, ``email``, ...) was 15-18 ms of a
host's start under runc, over a third of it for the SDK and toolkits, in
containers of the ``default`` profile that never serve ``fetch``. The ``http``
profile preloads it instead (``python_preload``).
"""

from __future__ import annotations

from typing import Literal

from stockade_sdk import ToolError, tool
from stockade_sdk.process import timeout_seconds

__all__ = ["fetch"]

MAX_BODY_BYTES = 1024 * 1024
_TUNNEL_REFUSED = "Tunnel connection failed: 403 Refused"
"""How ``http.client`` reports the egress proxy's refusal of an HTTPS ``CONNECT``."""


@tool(profile="http")
def fetch(
    url: str,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    timeout_s: float = 20.0,
) -> dict[str, object]:
    """Fetch a URL over HTTP(S); return the status, headers and (capped) body.

    Hosts outside the organisation's egress allowlist are refused: an http:// URL
    gets status 403 with the header ``X-Stockade-Egress: refused``, an https://
    URL an error saying the egress proxy refused it.

    Args:
        url: An http:// or https:// URL.
        method: The HTTP method.
        headers: Request headers.
        body: Request body (UTF-8 text), for POST, PUT and PATCH.
        timeout_s: Seconds to wait for the response.
    """
    import http.client  # noqa: PLC0415 - see the module doc
    import urllib.error  # noqa: PLC0415 - see the module doc
    import urllib.request  # noqa: PLC0415 - see the module doc

    if not url.startswith(("http://", "https://")):
        raise ToolError(f"only http:// and https:// URLs can be fetched, got {url!r}")
    wait_s = timeout_seconds(timeout_s)  # a socket takes no NaN, nor centuries
    try:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=body.encode() if body is not None else None,
            headers=headers or {},
            method=method,
        )
        try:
            response = urllib.request.urlopen(request, timeout=wait_s)  # noqa: S310
        except urllib.error.HTTPError as error:
            response = error  # an answer all the same: its status and body go back
        with response:
            data = response.read(MAX_BODY_BYTES + 1)
            return {
                "status": response.status,
                "headers": dict(response.headers.items()),
                "body": data[:MAX_BODY_BYTES].decode("utf-8", "replace"),
                "truncated": len(data) > MAX_BODY_BYTES,
            }
    except (OSError, ValueError, http.client.HTTPException) as error:
        # No (whole) answer: a bad URL or header, a reset, no reply in time. One
        # line the model can act on, not a traceback through urllib.
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            raise ToolError(f"no response from {url} within {timeout_s:g} s") from None
        if str(reason).endswith(_TUNNEL_REFUSED):  # http.client's words for the proxy's 403
            raise ToolError(
                f"could not fetch {url}: the egress proxy refused it (the host is not in "
                "the allowlist, or resolves to a refused address)"
            ) from None
        raise ToolError(f"could not fetch {url}: {reason}") from None

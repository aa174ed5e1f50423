"""Where the server may listen: anything but loopback needs API tokens to exist first."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from orchestrator.errors import ConfigError
from orchestrator.server._tokens import TokenStore

__all__ = ["check_bind", "is_loopback_host", "is_loopback_origin", "is_own_loopback_origin"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or name, IPv6 with or without brackets) is loopback only.

    Names other than ``localhost`` count as not loopback: what they resolve
    to can change.
    """
    bare = host.strip().lower()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if bare in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _host_of(authority: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def is_loopback_origin(host_header: str | None, origin: str | None) -> bool:
    """Whether a request names a loopback host and, if a browser sent an ``Origin``, a loopback one.

    A web page the user visits can send requests to 127.0.0.1; through DNS
    rebinding it can even read the answers, but its ``Host`` then carries
    the page's own name, and a cross-site ``Origin`` its site.
    """
    if not host_header or not is_loopback_host(_host_of(host_header)):
        return False
    if origin is None:
        return True
    hostname = urlsplit(origin).hostname
    return hostname is not None and is_loopback_host(hostname)


def is_own_loopback_origin(host_header: str | None, origin: str | None) -> bool:
    """:func:`is_loopback_origin`, and a browser's ``Origin`` names the port the request
    went to: the server's own pages, not a page another local server (a dev server, a
    notebook) serves on another port — another origin, though the same site."""
    if not is_loopback_origin(host_header, origin):
        return False
    if origin is None:
        return True
    try:
        sent_from = urlsplit(origin)
        sent_to = urlsplit(f"//{host_header}")
        origin_port = sent_from.port or _DEFAULT_PORTS.get(sent_from.scheme)
        # The server speaks plain HTTP: a Host without a port means port 80.
        return origin_port == (sent_to.port or 80)
    except ValueError:  # a port that is no number, or out of range
        return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_bind(host: str, tokens: TokenStore) -> None:
    """Refuse to listen on anything but loopback while no API token is active.

    Raises :class:`~orchestrator.errors.ConfigError` (field ``server.host``)
    naming the command that creates a token.
    """
    if is_loopback_host(host) or tokens.has_active():
        return
    raise ConfigError(
        f"{host} is not a loopback address and no API token is active in {tokens.path}; "
        "create one first (stockade tokens create --principal NAME --role caller), "
        "or listen on 127.0.0.1",
        field="server.host",
    )

"""Ray's token authentication as Ray itself reads it, for hosts and ``stockade doctor``.

A Ray node holds a Docker socket, which is as good as root on it: Stockade
requires ``RAY_AUTH_MODE=token``. Ray decides the mode and finds the token
(``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) in its
core; asking it, rather than re-reading the environment, answers with what
this process really does.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["token_authentication"]


def token_authentication() -> tuple[bool, bool]:
    """(token authentication on in this process, a token found): the ray extra."""
    # Ray's compiled core; its shipped stub does not list these names (Ray 2.60).
    raylet: Any = importlib.import_module("ray._raylet")
    on = raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN
    return bool(on), bool(
        raylet.AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    )

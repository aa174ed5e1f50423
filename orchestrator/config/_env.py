"""Every environment variable Stockade reads, in one place.

Each ``STOCKADE_*`` variable sets one field of the configuration; it beats
the file and loses to a command-line flag. The other variables read are the
model's API key and the secrets of the egress proxy, under the names the
configuration gives (``model.api_key_env``, ``secrets.<name>.env``). Nothing
else in the project reads the environment (the Docker SDK's own
``DOCKER_HOST`` aside).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "CONFIG_VARIABLE",
    "ENVIRONMENT_FIELDS",
    "api_key_from_env",
    "config_file_from_env",
    "environment_layer",
    "secret_from_env",
]

CONFIG_VARIABLE = "STOCKADE_CONFIG"
"""Names the configuration file when ``--config`` does not."""

ENVIRONMENT_FIELDS: Mapping[str, str] = {
    "STOCKADE_HOME": "state_dir",
    "STOCKADE_POLICY": "policy",
    "STOCKADE_TOOLKITS": "toolkits",
    "STOCKADE_RUNTIME": "sandbox.runtime",
    "STOCKADE_BASE_IMAGE": "images.base_image",
    "STOCKADE_IMAGES_DIR": "images.sources",
    "STOCKADE_AUDIT_LOG": "audit.path",
    "STOCKADE_APPROVALS_DB": "approvals.database",
    "STOCKADE_APPROVERS": "approvals.approvers",
    "STOCKADE_LIMITS_STORE": "limits.store",
    "STOCKADE_MODEL_BASE_URL": "model.base_url",
    "STOCKADE_MODEL": "model.name",
}
"""Variable → the configuration field (dotted) it sets."""


def config_file_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``$STOCKADE_CONFIG``, if set and not empty."""
    value = (os.environ if environ is None else environ).get(CONFIG_VARIABLE, "")
    return value or None


def environment_layer(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Field (dotted) → (value, variable) for every set, non-empty ``STOCKADE_*`` variable."""
    env = os.environ if environ is None else environ
    return {
        field: (env[variable], variable)
        for variable, field in ENVIRONMENT_FIELDS.items()
        if env.get(variable)
    }


def api_key_from_env(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret in the environment variable ``variable``, if set and not empty.

    The configuration names the variable, never the key, so the key stays out
    of files and out of ``stockade config show``.
    """
    value = (os.environ if environ is None else environ).get(variable, "")
    return value or None


def secret_from_env(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a configured secret (``secrets.<name>.env``), if set and not empty.

    Read once, when the platform starts; the value goes to the egress proxy
    only, never into a sandbox, a prompt, a log or the audit log.
    """
    value = (os.environ if environ is None else environ).get(variable, "")
    return value or None

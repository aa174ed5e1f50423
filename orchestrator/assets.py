"""Files Stockade ships beside its code: the policies and the sandbox image sources.

``orchestrator/_assets/`` links to the top-level ``policies/`` and
``sandbox_images/`` of the source tree; a wheel carries copies of them there,
so a checkout, an editable install and a wheel installed anywhere all find
them at the same place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["shipped"]

_ASSETS = Path(__file__).resolve().parent / "_assets"


def shipped(name: Literal["policies", "sandbox_images"]) -> Path:
    """The shipped directory ``name``; raises if the installation lacks it."""
    path = _ASSETS / name
    if not path.is_dir():
        raise InfrastructureError(
            f"the installation has no {name}/ at {path}; reinstall stockade",
            code=ErrorCode.INSTALLATION,
            op="assets.find",
            retryable=False,
        )
    return path.resolve()

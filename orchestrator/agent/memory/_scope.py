"""Whose memories a run sees: its principal's own, or a namespace the configuration names.

Every memory carries its scope, and every recall filters on one scope inside
the vectorised search, so a run recalls nothing from another scope: with no
namespace configured, one principal's runs never see another's memories.
"""

from __future__ import annotations

__all__ = ["memory_scope"]


def memory_scope(principal: str, *, namespace: str | None = None) -> str:
    """``namespace:<name>`` when a namespace is configured, else ``principal:<principal>``.

    The prefixes keep the two apart: a principal named like a namespace still
    gets a scope of its own.
    """
    if namespace:
        return f"namespace:{namespace}"
    if not principal:
        raise ValueError("a run's memory needs a principal, or a namespace in the configuration")
    return f"principal:{principal}"

"""Bounded records: a large value is kept as its digest, its size and its first bytes.

A model chooses the arguments of its calls, so a record that stored them whole
would let it fill the disk through the audit log (three ``files.write`` calls
of 5 MB each once added 15 MB). A value whose encoding is larger than the cap
is replaced by::

    {"sha256": "<hex digest of the value's bytes>", "bytes": <size>, "head": "<first bytes>"}

The digest and size still prove what was sent (hash the value and compare);
the head is for a human reading the log. A string's bytes are its UTF-8
encoding; any other value's bytes are its canonical JSON (see
:func:`~orchestrator.audit.canonical_json`). Each top-level entry of a mapping
field (``arguments``, ``detail``) is bounded on its own, so a file's path stays
readable while its 5 MB content is replaced.

The log adds ``"bounded"`` to a line that had values replaced: the JSON
Pointers (RFC 6901) of those values. It is the log's word, not the caller's, so
a model cannot pass off a small dict shaped like a replacement as one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator.audit._chain import canonical_json

__all__ = ["BOUNDED_FIELDS", "bound_record", "bound_value"]

BOUNDED_FIELDS = ("arguments", "output", "error", "detail", "files_changed", "files_rejected")
"""The record fields whose values a model or a tool can make large."""

# Whole fields, bounded as one value (a list of paths as one list).
_SCALAR_FIELDS = frozenset({"output", "error", "files_changed", "files_rejected"})


def bound_value(value: Any, cap: int) -> Any:
    """``value`` itself when its encoding is at most ``cap`` bytes, else its replacement."""
    if isinstance(value, str):
        # Cheap test first: a code point is at most 4 bytes of UTF-8, and
        # almost every value is far below the cap.
        if len(value) * 4 <= cap:
            return value
        encoded = value.encode("utf-8", "surrogatepass")
        if len(encoded) <= cap:
            return value
        head = encoded[:cap].decode("utf-8", "ignore")  # never half a character
    elif isinstance(value, dict | list):
        encoded = canonical_json(value)
        if len(encoded) <= cap:
            return value
        head = encoded[:cap].decode("ascii")
    else:
        return value  # numbers, booleans and null are small
    return {"sha256": hashlib.sha256(encoded).hexdigest(), "bytes": len(encoded), "head": head}


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _bound_mapping(
    mapping: dict[str, Any], cap: int, at: tuple[str, ...], replaced: list[str]
) -> dict[str, Any]:
    bounded = mapping
    for key, value in mapping.items():
        new = bound_value(value, cap)
        if new is not value:
            if bounded is mapping:
                bounded = dict(mapping)  # the caller's mapping is left as it was
            bounded[key] = new
            replaced.append(_pointer(*at, key))
    return bounded


def bound_record(body: dict[str, Any], cap: int) -> list[str]:
    """Bound ``body``'s large values in place; the JSON Pointers of those replaced."""
    replaced: list[str] = []
    for field in BOUNDED_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if field in _SCALAR_FIELDS or not isinstance(value, dict):
            new = bound_value(value, cap)
            if new is not value:
                body[field] = new
                replaced.append(_pointer(field))
        else:
            body[field] = _bound_mapping(value, cap, (field,), replaced)
    approval = body.get("approval")
    if isinstance(approval, dict) and isinstance(approval.get("edited_arguments"), dict):
        approval["edited_arguments"] = _bound_mapping(
            approval["edited_arguments"], cap, ("approval", "edited_arguments"), replaced
        )
    return replaced

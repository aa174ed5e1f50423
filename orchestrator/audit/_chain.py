"""The hash chain: canonical encoding and record hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["GENESIS", "canonical_json", "record_hash"]

GENESIS = "0" * 64
"""The ``prev`` of the first record."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only (so no encoding can differ), no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field but ``hash``."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()

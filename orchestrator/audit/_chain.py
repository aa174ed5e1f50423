"""The hash chain: canonical encoding and record hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["GENESIS", "canonical_json", "encode_record", "parse_line", "record_hash"]

GENESIS = "0" * 64
"""The ``prev`` of the first record."""


# One encoder for every call: json.dumps with these options builds a new
# JSONEncoder each time, a seventh of encoding an 800-byte record (measured
# 7.1 against 6.1 µs); the output is the same bytes.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only (so no encoding can differ), no NaN."""
    return _CANONICAL.encode(value).encode("ascii")


def parse_line(raw: bytes) -> Any:
    """The JSON value of one line of a log; :class:`ValueError` when the line holds none.

    Nesting too deep for the parser (a line of ``[[[[…``, which no writer makes
    but anyone can put in a file) is such a line too, not a :class:`RecursionError`
    that would stop whoever reads the log.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply to be a record") from None


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field but ``hash``."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def encode_record(body: Mapping[str, Any]) -> tuple[bytes, str]:
    """The line of a record (without its newline) and its hash, in one serialisation.

    The hash is SHA-256 over the canonical JSON of ``body``; the line is that
    same JSON with ``"hash"`` added as its last key. Verification rebuilds the
    line from the parsed record and compares bytes, so any edit shows.
    """
    encoded = canonical_json(body)
    digest = hashlib.sha256(encoded).hexdigest()
    separator = b"" if encoded == b"{}" else b","
    return encoded[:-1] + separator + b'"hash":"' + digest.encode("ascii") + b'"}', digest

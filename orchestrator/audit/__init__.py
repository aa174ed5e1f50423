"""The audit log: append-only JSON lines, chained by SHA-256 so tampering shows.

Each line is one record: ``seq`` (0, 1, 2 …), ``ts`` (UTC, ISO 8601),
``prev`` (the hash of the record before; 64 zeros for the first), the
:class:`AuditRecord` fields in canonical JSON (sorted keys, no spaces,
ASCII), then, as the last key, ``hash``: SHA-256 over that JSON. ``verify``
walks the chain and names the first line that was edited, removed, inserted
or moved.

Records are bounded: a value larger than the log's ``max_value_bytes`` is
kept as its SHA-256, size and first bytes, and the line's ``bounded`` lists
which. The log rotates by size into numbered files that continue one chain;
``verify`` and ``tail`` read them all. Callers on an event loop ``await
log.write(record)``: a background thread commits concurrent records with one
``fsync``.

Write-ahead: the gateway writes an ``intent`` record, durably, before each
attempt of a call acquires its sandbox, and the call's ``call`` record (its
outcome) names those intents by ``seq``; ``verify`` reports intents no outcome
followed apart from tampering. See :mod:`orchestrator.audit._log` for the fsync, locking and
rotation rules.
"""

from orchestrator.audit._chain import GENESIS, canonical_json, encode_record, record_hash
from orchestrator.audit._log import AuditLog
from orchestrator.audit._record import (
    ApprovalInfo,
    AuditEvent,
    AuditRecord,
    EgressConnection,
    RateLimitInfo,
)
from orchestrator.audit._redact import REDACTED, redact, redacted_at
from orchestrator.audit._verify import OpenIntent, VerifyReport, tail, verify

__all__ = [
    "GENESIS",
    "REDACTED",
    "ApprovalInfo",
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "EgressConnection",
    "OpenIntent",
    "RateLimitInfo",
    "VerifyReport",
    "canonical_json",
    "encode_record",
    "record_hash",
    "redact",
    "redacted_at",
    "tail",
    "verify",
]

"""Histogram buckets, chosen per latency: each covers the range its measurement really spans.

Buckets are fixed at definition (a change re-shapes every series), so each
tuple says what it measures and why its edges are where they are.
"""

from __future__ import annotations

__all__ = [
    "AGENT_ITERATIONS",
    "AGENT_RUN_SECONDS",
    "APPROVAL_WAIT_SECONDS",
    "HOST_DISPATCH_SECONDS",
    "OUTPUT_BYTES",
    "SANDBOX_OPERATION_SECONDS",
    "TOOL_CALL_SECONDS",
]

TOOL_CALL_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip
"""A tool call through the gateway: sub-millisecond refusals (denied, rate limited, invalid
arguments: ~0.4 ms with the audit fsync) through warm-pool calls (~5 ms) to programs that run
for minutes (and calls that waited for an approval)."""

SANDBOX_OPERATION_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
"""One engine operation (create, start, remove) or a call's exchange with its container (exec):
create and remove take ~10-50 ms under runc, a start with the runner ready ~100-300 ms (more under
gVisor), an exec from milliseconds to the profile's deadline."""

APPROVAL_WAIT_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
"""People answer in seconds to hours; a run may wait a day for an approval."""

AGENT_RUN_SECONDS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
"""A whole agent run: a few model turns (seconds) to long tasks with approvals (an hour or two)."""

AGENT_ITERATIONS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
"""Model turns per run: most runs take a handful; the iteration limit caps the tail."""

OUTPUT_BYTES = (0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""A tool's output: empty, a line, a page, up to the profile's output limit (1 MiB by default)."""

HOST_DISPATCH_SECONDS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
)  # fmt: skip
"""What a Ray round trip adds to a call on a sandbox host: ~1.5 ms p50 on a quiet cluster
(DESIGN.md), 5-40 ms on a loaded 2-core machine; seconds mean a large workspace through the
object store or a struggling node."""

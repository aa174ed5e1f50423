"""How long one run's call timeline takes to read from a large audit log.

The run timeline (``stockade audit timeline --run``, a run's page, a resumed
run's check for calls that may have run) reads the audit log, its rotated
files too, for the records of one run. The log is built here through the real
:class:`~orchestrator.audit.AuditLog` (without ``fsync``: only the reading is
measured): ``--calls`` calls spread over ``--runs`` runs, each call an intent
and an outcome record with a few hundred bytes of arguments and output, the
current file rotated every 16 MB as a deployment's would be at 64 MB.

Run: ``.venv/bin/python benchmarks/timeline_bench.py [--calls 50000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _bench import percentiles, stop_on_sigterm

from orchestrator.audit import AuditLog
from orchestrator.audit.timeline import call_timeline


def build(path: Path, calls: int, runs: int) -> int:
    """Write the log; its size in bytes (every file)."""
    log = AuditLog(path, fsync=False, rotate_bytes=16 * 1024 * 1024, group_commit=False)
    try:
        for number in range(calls):
            common = {
                "call_id": f"call-{number:07d}",
                "run_id": f"run-{number % runs:05d}",
                "tool": "python.run",
                "principal": "agent:bench",
                "arguments": {"code": f"print(sum(range({number})))\n" + "# padding\n" * 20},
            }
            log.append({"event": "intent", "attempt": 1, "decision": "allow", **common})
            log.append(
                {"event": "call", "status": "ok", "duration_s": 0.0125, "exit_code": 0,
                 "output": f"{number * (number - 1) // 2}\n" * 8, **common}
            )  # fmt: skip
    finally:
        log.close()
    return sum(file.stat().st_size for file in path.parent.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="Calls in the log.")
    parser.add_argument("--runs", type=int, default=500, help="Runs the calls belong to.")
    parser.add_argument("--reads", type=int, default=7, help="Timeline reads timed.")
    args = parser.parse_args()
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="stockade-timeline-") as directory:
        path = Path(directory) / "audit.jsonl"
        began = time.perf_counter()
        size = build(path, args.calls, args.runs)
        files = len(list(path.parent.iterdir()))
        written_s = time.perf_counter() - began
        print(f"log: {2 * args.calls} records, {size / 1e6:.1f} MB in {files} files, "
              f"written in {written_s:.1f} s")  # fmt: skip
        samples = []
        for read in range(args.reads):
            began = time.perf_counter()
            entries = call_timeline(path, run_id=f"run-{read % args.runs:05d}")
            samples.append(time.perf_counter() - began)
            assert len(entries) == args.calls // args.runs, len(entries)
        p50, p95, _ = percentiles(samples)
        print(f"one run's timeline ({args.calls // args.runs} calls): p50 {p50:.0f} ms, "
              f"p95 {p95:.0f} ms over {args.reads} reads")  # fmt: skip


if __name__ == "__main__":
    main()

"""A call's own time against the engine's work after it: the container's teardown and
the pool's refill right when the call returns, or 50 ms later (the default).

Tool calls through the gateway make two durable audit records each, the
second after the sandbox answered, just when the engine kills and removes
the call's container and starts the pool's replacement. Two measurements, each
side by side in one run:

1. ``python.run print(1)`` and ``files.read`` of a one-file workspace through
   the gateway, the two teardown timings alternating call by call in one
   process (``DockerBackend``'s ``_AFTER_CALL_S`` 0 and 0.05 s; each call
   starts after the last one's teardown, and with a ready pool); for each:
   the whole call, its phases (the intent record, the sandbox call, the
   outcome record and the rest of the gateway's finish) and every ``fsync``
   the audit writer makes meanwhile;
2. a record-sized ``write`` + ``fsync`` appended to a file (what the audit
   log does) against a ``pwrite`` into a pre-zeroed file + ``fdatasync``
   (which skips the filesystem's journal), on a quiet engine and while two
   threads run ``docker run --rm`` of the sandbox image back to back.

Run: ``.venv/bin/python benchmarks/after_call_bench.py [--calls 100] [--records 300]``.
Leaves nothing behind (its files are in a temporary directory under /var/tmp,
on the disk a state directory is on by default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _bench import stop_on_sigterm

import orchestrator.audit._appender as appender
from orchestrator.assets import shipped
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox import docker_backend
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.tools import ToolCall, ToolStatus

RECORD = b'{"x": "' + b"y" * 400 + b'"}\n'  # about an outcome record's size


def ms(samples: list[float], fraction: float = 0.5) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] * 1000


class TimedFsync:
    """Replaces the audit appender's ``os.fsync`` with one that times each call."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._real: Callable[[int], None] = os.fsync

    def __call__(self, fd: int) -> None:
        began = time.perf_counter()
        self._real(fd)
        self.samples.append(time.perf_counter() - began)


async def teardown_timings(calls: int, home: Path) -> None:
    timed = TimedFsync()
    appender.os.fsync = timed  # type: ignore[attr-defined]  # the module's view of os
    config = home / "stockade.yaml"
    config.write_text(
        f"state_dir: {home}\npolicy: {shipped('policies') / 'dev.yaml'}\n"
        "toolkits: [toolkits.files, toolkits.python]\n"
        "sandbox:\n  profiles:\n    default: {pool_size: 2}\n"
    )
    samples: dict[tuple[str, float, str], list[float]] = {}
    default = docker_backend._AFTER_CALL_S
    async with Platform.open(load_config(config), warm=True) as platform:
        backend, gateway = platform.sandbox, platform.gateway
        assert isinstance(backend, DockerBackend)
        profile = platform.profiles["default"]
        (platform.workspaces.open("bench").path / "notes.txt").write_text("hello\n" * 100)
        phase: dict[str, float] = {}

        def clocked(obj: object, name: str) -> None:
            real = getattr(obj, name)

            async def timed_phase(*args: object, **kwargs: object) -> object:
                began = time.perf_counter()
                try:
                    return await real(*args, **kwargs)
                finally:
                    phase[name] = time.perf_counter() - began

            setattr(obj, name, timed_phase)

        for name in ("_intend", "_finish"):
            clocked(gateway, name)
        clocked(backend, "execute")
        tools = (
            ("python.run `print(1)`", "python.run", {"code": "print(1)"}, None),
            ("files.read, workspace of 1 file", "files.read", {"path": "notes.txt"}, "bench"),
        )
        for number in range(calls):
            for delay in (0.0, default):
                for label, tool, arguments, run_id in tools:
                    docker_backend._AFTER_CALL_S = delay
                    await backend.wait_warm(profile)
                    await asyncio.sleep(0.1)  # the last call's teardown is over, either way
                    before = len(timed.samples)
                    began = time.perf_counter()
                    call = ToolCall(
                        id=f"c{number}-{delay}-{tool}",
                        name=tool,
                        arguments=arguments,
                        run_id=run_id,
                    )
                    result = await gateway.call(call)
                    whole = time.perf_counter() - began
                    assert result.status is ToolStatus.OK, result
                    for key, value in (
                        ("call", whole),
                        ("intent record", phase["_intend"]),
                        ("sandbox call", phase["execute"]),
                        ("outcome record and finish", phase["_finish"]),
                    ):
                        samples.setdefault((label, delay, key), []).append(value)
                    samples.setdefault((label, delay, "fsync"), []).extend(timed.samples[before:])
    docker_backend._AFTER_CALL_S = default
    print(f"\n| {calls} calls each, interleaved | teardown | call p50 | p95 | p99 "
          "| intent | sandbox | outcome + finish | fsync p50 | fsync p95 |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, _tool, _arguments, _run in tools:
        for delay in (0.0, default):
            keys = ("call", "intent record", "sandbox call", "outcome record and finish", "fsync")
            row = {key: samples[(label, delay, key)] for key in keys}
            when = "at once" if delay == 0 else f"{delay * 1000:.0f} ms later"
            print(
                f"| {label} | {when} | {ms(row['call']):.2f} | {ms(row['call'], 0.95):.2f} "
                f"| {ms(row['call'], 0.99):.2f} | {ms(row['intent record']):.2f} "
                f"| {ms(row['sandbox call']):.2f} | {ms(row['outcome record and finish']):.2f} "
                f"| {ms(row['fsync']):.3f} | {ms(row['fsync'], 0.95):.3f} |"
            )


def records(directory: Path, count: int) -> tuple[list[float], list[float]]:
    appended, in_place = [], []
    append_fd = os.open(directory / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    zeroed_fd = os.open(directory / "zeroed.log", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(zeroed_fd, b"\0" * (len(RECORD) * count + 4096))
        os.fsync(zeroed_fd)
        for index in range(count):
            began = time.perf_counter()
            os.write(append_fd, RECORD)
            os.fsync(append_fd)
            appended.append(time.perf_counter() - began)
            began = time.perf_counter()
            os.pwrite(zeroed_fd, RECORD, index * len(RECORD))
            os.fdatasync(zeroed_fd)
            in_place.append(time.perf_counter() - began)
            time.sleep(0.01)  # calls are not back to back
    finally:
        os.close(append_fd)
        os.close(zeroed_fd)
    return appended, in_place


def sandbox_image() -> str:
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "stockade-sandbox"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listed.stdout.split()[0]


def fsync_under_churn(count: int, home: Path) -> None:
    image = sandbox_image()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            subprocess.run(
                ["docker", "run", "--rm", "--network", "none", image, "true"],
                capture_output=True, check=False,
            )  # fmt: skip

    print(f"\n| {count} records, {len(RECORD)} bytes | engine | p50 ms | p95 ms |")
    print("|---|---|---:|---:|")
    rows = []
    for label in ("quiet", "two `docker run --rm` loops"):
        threads = [threading.Thread(target=churn) for _ in range(2)] if label != "quiet" else []
        for thread in threads:
            thread.start()
        try:
            directory = Path(tempfile.mkdtemp(dir=home))
            rows.append((label, *records(directory, count)))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            stop.clear()
    for label, appended, in_place in rows:
        print(f"| append + fsync | {label} | {ms(appended):.3f} | {ms(appended, 0.95):.3f} |")
        print(
            f"| pre-zeroed pwrite + fdatasync | {label} | {ms(in_place):.3f} "
            f"| {ms(in_place, 0.95):.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    print(f"load at start: {os.getloadavg()[0]:.2f}")
    # On the disk the state directory is on by default (not a tmpfs /tmp).
    with tempfile.TemporaryDirectory(prefix="stockade-fsync-", dir="/var/tmp") as home:
        asyncio.run(teardown_timings(args.calls, Path(home)))
        fsync_under_churn(args.records, Path(home))
    print(f"\nload at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

"""A real OTLP receiver for the tracing tests: Phoenix, in a network namespace of its own.

Phoenix (``arize-phoenix`` from PyPI) lives in a virtual environment of its own
under the test cache (``$STOCKADE_TEST_CACHE``, else ``~/.cache/stockade``),
made on first use. It runs inside a network namespace the fixture creates
(its gRPC port listens on every interface; there only loopback exists), and
everything that talks to it — the traced run, the reads of its span API —
runs in that namespace too. Teardown kills Phoenix and deletes the namespace
and Phoenix's working directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("STOCKADE_TEST_CACHE") or Path.home() / ".cache" / "stockade")
PHOENIX_VENV = CACHE / "phoenix-venv"
PHOENIX_PORT = 6106
RUNNER = Path(__file__).with_name("traced_run.py")

# Runs inside the namespace: GET a URL (retrying while the server starts), print the body.
_GET = """
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
            sys.stdout.write(reply.read().decode())
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
"""


def phoenix_program() -> Path:
    """``phoenix`` of the cached virtual environment, installed there first if missing."""
    program = PHOENIX_VENV / "bin" / "phoenix"
    if not program.exists():
        venv.create(PHOENIX_VENV, with_pip=True, clear=True)
        subprocess.run(
            [str(PHOENIX_VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"],
            check=True,
            timeout=1800,
        )
    return program


@dataclass
class Phoenix:
    """A Phoenix server inside network namespace ``namespace``."""

    namespace: str
    port: int

    @property
    def endpoint(self) -> str:
        """Its OTLP/HTTP traces URL (reachable inside the namespace only)."""
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def inside(self, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace; its output, checked."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            cwd=ROOT,
        )

    def get(self, path: str, wait_s: float = 10) -> Any:
        """GET ``path`` from Phoenix's API, as JSON."""
        url = f"http://127.0.0.1:{self.port}{path}"
        return json.loads(self.inside(sys.executable, "-c", _GET, url, str(wait_s)).stdout)

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of trace ``trace_id`` Phoenix holds."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
            page = self.get(f"/v1/projects/default/spans{query}")
            found += [s for s in page["data"] if s["context"]["trace_id"] == trace_id]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def traced_run(self, home: Path, *, capture: bool) -> dict[str, Any]:
        """The scripted run (``traced_run.py``) inside the namespace, traced to Phoenix."""
        done = self.inside(
            sys.executable, str(RUNNER), str(home), self.endpoint, "1" if capture else "0"
        )
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Phoenix]:
    """Phoenix serving in a fresh network namespace; gone (with its files) afterwards."""
    program = phoenix_program()
    namespace = f"stockade-otel-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="stockade-phoenix-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            # Phoenix keeps a registry of its processes under the temporary directory
            # (.arize-phoenix/pids), which would outlive the test in /tmp.
            "TMPDIR": str(workdir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(PHOENIX_PORT),
            "PHOENIX_WORKING_DIR": str(workdir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        with (workdir / "phoenix.log").open("wb") as log:
            server = subprocess.Popen(
                ["ip", "netns", "exec", namespace, str(program), "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        served = Phoenix(namespace=namespace, port=PHOENIX_PORT)
        served.get("/v1/projects", wait_s=180)
        yield served
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=20)
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        shutil.rmtree(workdir, ignore_errors=True)

"""A sandbox host's own logic, without a cluster: engine trouble and hostile replies (issue 14).

The host actor's body (:class:`SandboxHost`) is an ordinary class; these tests
build it around a Docker client whose engine does not answer, or drive its relay
with a scripted container stream, so they need neither Ray nor Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import itertools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from orchestrator.errors import InfrastructureError
from orchestrator.sandbox import ray_host
from orchestrator.sandbox._archive import ArchiveLimitError, WorkspaceReader
from orchestrator.sandbox._report import read_reply
from orchestrator.sandbox._wire import FrameTooLargeError
from orchestrator.sandbox.hosts import state_of, view
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.ray_backend import _Reply
from orchestrator.sandbox.ray_host import LIVE_OFF, SandboxHost, _Relay


class _EngineDown:
    """A Docker client whose engine does not answer, failing as the SDK then does: with
    requests' ConnectionError, not one of docker's own exceptions."""

    def __init__(self) -> None:
        self.api = self

    def _down(self, *args: object, **options: object) -> Any:
        raise requests.exceptions.ConnectionError("Connection aborted: no such socket")

    version = info = containers = remove_container = _down


@pytest.fixture
def host_without_engine(monkeypatch: pytest.MonkeyPatch) -> SandboxHost:
    """A host whose engine is down."""
    monkeypatch.setattr(ray_host, "engine_client", _EngineDown)
    monkeypatch.setattr(ray_host, "_node_id", lambda: "node-1")
    monkeypatch.setattr(ray_host, "token_authentication", lambda: (True, True))
    return SandboxHost("host-x")


async def test_a_host_whose_engine_is_down_describes_itself_as_lost(
    host_without_engine: SandboxHost,
) -> None:
    """Its record still comes (the orchestrator renews its lease with it and reads it), says
    the engine does not answer, and makes the host lost: placement sends it nothing."""
    record = json.loads(await host_without_engine.describe("a" * 32))
    assert "engine does not answer" in record["engine_error"]
    assert state_of(record) == "lost"
    seen = view("host-x", record)
    assert seen.state == "lost" and "engine does not answer" in seen.reason


class _ScriptedStdout:
    """A container's stdout as the host reads it: the runner's frames, scripted (hostile)."""

    def __init__(self, frames: Iterable[bytes]) -> None:
        self._frames = iter(frames)
        self.read = 0
        """Frames the host has read."""

    async def read_frame(self, limit: int) -> bytes:
        payload = next(self._frames)
        if len(payload) > limit:
            raise FrameTooLargeError(f"frame of {len(payload)} bytes, limit {limit}")
        self.read += 1
        return payload


async def test_a_hostile_runner_cannot_make_the_host_copy_entries_without_end() -> None:
    """A runner sends a million directory entries (64 MiB of names): the host stops copying
    where the orchestrator's reader is bound to have refused the workspace already (twice
    the entry limit, plus one), so neither the host nor the orchestrator holds the rest."""
    profile = SandboxProfile(name="entries", workspace_max_files=10)
    names = (b"D" + b"x" * 60 + str(index).encode() for index in range(1_000_000))
    stdout = _ScriptedStdout(itertools.chain([b'{"exit_code": 0}', b"", b""], names, [b""]))
    relay = _Relay(cast(Any, None), LIVE_OFF)
    await relay._copy_reply(cast(Any, stdout), profile, return_workspace=True)
    assert stdout.read <= 3 + 2 * 10 + 1
    # What was copied is refused by the orchestrator's own reader, as the whole would be.
    reply = _Reply(bytes(relay.reply))
    await read_reply(reply, profile.output_limit_bytes)
    reader = WorkspaceReader(sent={}, max_bytes=profile.workspace_bytes, max_files=10)
    with pytest.raises(ArchiveLimitError):
        await reader.read(reply)


def test_the_benchmarks_scripted_host_takes_every_argument_a_real_host_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``benchmarks/ray_bench.py`` stands a scripted actor in for each host: a method missing
    an argument the backend sends (``register(egress=)``, ``execute(credentials=)``) fails
    in the actor, and the scaling row measures nothing."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "benchmarks"))
    scripted = importlib.import_module("ray_bench").ScriptedHost
    for name in ("register", "describe", "warm", "execute", "release"):
        positional: list[None] = []
        keywords: dict[str, None] = {}
        for param in list(inspect.signature(getattr(SandboxHost, name)).parameters.values())[1:]:
            if param.name.startswith("_ray_"):
                # Ray's own (``_ray_trace_ctx``, added to every actor method once a test in
                # the same process has turned Ray's tracing hook on): Ray passes it itself.
                continue
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                keywords[param.name] = None
            else:
                positional.append(None)
        try:
            inspect.signature(getattr(scripted, name)).bind(None, *positional, **keywords)
        except TypeError as exc:
            pytest.fail(f"ScriptedHost.{name}: {exc}")


async def test_a_lease_running_out_while_the_engine_is_down_is_expired_later(
    host_without_engine: SandboxHost,
) -> None:
    """Releasing an orchestrator whose lease ran out needs the engine; while it does not
    answer, the release fails as an infrastructure error, the lease stays to be expired
    again, and the host's janitor lives on (it alone expires leases, for the host's life)."""
    host = host_without_engine
    with pytest.raises(InfrastructureError):
        await host.release("b" * 32)
    host._leases["c" * 32] = (time.monotonic() - 100.0, 1.0)
    janitor = asyncio.get_running_loop().create_task(host._expire_leases())
    try:
        for _ in range(40):  # one round of the janitor: a second
            if "engine" in host._last_error or janitor.done():
                break
            await asyncio.sleep(0.1)
        assert not janitor.done(), janitor
        assert "c" * 32 in host._leases and "engine" in host._last_error
    finally:
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor


async def test_a_lease_that_ran_out_comes_back_with_the_length_the_orchestrator_says(
    host_without_engine: SandboxHost,
) -> None:
    """An orchestrator cut off until its lease (90 s) ran out renews it with its next
    describe: the lease is 90 s again, not the host's 30 s default (which would remove the
    containers of an orchestrator that renews every 40 s). A call's renewal, naming no
    length, keeps the lease's own; a length out of bounds is not taken."""
    host = host_without_engine
    orchestrator = "d" * 32
    await host.describe(orchestrator, 90.0)
    assert host._leases[orchestrator][1] == 90.0
    del host._leases[orchestrator]  # ran out, expired by the janitor
    await host.describe(orchestrator, 90.0)
    assert host._leases[orchestrator][1] == 90.0
    host._renew(orchestrator)  # a call's renewal
    assert host._leases[orchestrator][1] == 90.0
    await host.describe(orchestrator, 10.0**9)
    assert host._leases[orchestrator][1] == 90.0

"""Dispatch cost of the Ray backend: a trivial call through Ray vs the Docker backend.

Forms the two-node test cluster (``orchestrator.testing.ray_cluster``: two
network namespaces, a second Docker engine; root needed), then, side by side in
one run at concurrency 1, ``echo ok`` in the same image and profile:

  (a) ``DockerBackend.execute`` on the main engine (this process's own pool);
  (b) ``RayBackend.execute`` over the cluster's two hosts (host-a: the main
      engine, host-b: the second engine);
  (c) what Ray adds to each call of (b): the orchestrator's round trip of the
      host's task minus the host's own time (encoding, RPC, object transfer,
      scheduling) — the dispatch cost the target is about (p50 ≤ 2 ms, p99 ≤ 5 ms);
  (d) scale of dispatch and placement: host actors backed by a fixed-latency
      scripted executor (50 ms a call, one at a time per host), 200 calls at
      concurrency 8 over one host and over two (target: two at least 1.8 times one).

  (e) Ray's transport alone, interleaved round by round: a probe actor on the
      second node answering as the host does, with one return value (a call
      that may run again and has no listener: most calls, (b)'s) or with its
      streaming generator (a ``started`` item, then the end): with the
      back-pressure of one item the backend asks for a call that may not run
      twice (egress, not idempotent), and without (a call with a listener).

Run: ``.venv/bin/python benchmarks/ray_bench.py [--calls 200]`` (``STOCKADE_CLUSTER_SLOT``
picks the cluster's names, as for the cluster tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
from _bench import stop_on_sigterm

from orchestrator.sandbox._wire import frame
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.sandbox.ray_host import CODE_FINGERPRINT, host_actor_name
from orchestrator.testing.ray_cluster import RayCluster

SCRIPTED_S = 0.05


class ScriptedHost:
    """A host actor with the real one's methods whose engine is a 50 ms sleep, one call at a time.

    Named like a real host in its own namespace, so the Ray backend finds it
    instead of creating a ``SandboxHost`` (``get_if_exists``).
    """

    def __init__(self, name: str, refuse: bool) -> None:
        self._name, self._refuse = name, refuse
        self._lock: asyncio.Lock | None = None
        self._served = 0

    async def register(
        self,
        images: list[str],
        orchestrator: str,
        lease_s: float,
        *,
        fresh: bool = False,
        egress: str = "",
    ) -> str:
        return await self.describe()

    async def describe(self, orchestrator: str = "", lease_s: float = 0.0) -> str:
        refused = f"{self._name} sits this run out" if self._refuse else ""
        # The code the backend checks: this process's own (it is the same checkout).
        record = {"host": self._name, "refused": refused, "ready": {}, "code": CODE_FINGERPRINT}
        return json.dumps(record)

    async def warm(self, orchestrator: str, profile_json: str, timeout_s: float) -> str:
        return await self.describe()

    async def execute(
        self,
        orchestrator: str,
        profile_json: str,
        request: bytes,
        timeout_s: float,
        ws: bool,
        *,
        live: int = 0,
        credentials: bytes = b"",
    ) -> tuple[str, bytes, bytes]:
        """The real host's one-value protocol (a call that may run again, no listener)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            began = time.monotonic()
            await asyncio.sleep(SCRIPTED_S)
            self._served += 1
        report = json.dumps({"exit_code": 0, "stdout_total": 3}).encode()
        reply = b"".join(frame(part) for part in (report, b"ok\n", b""))
        record = {"ended": "complete", "container_id": "scripted", "image_digest": "",
                  "from_pool": True, "host_s": time.monotonic() - began}  # fmt: skip
        return json.dumps(record), reply, b""

    async def release(self, orchestrator: str) -> int:
        return 0


async def _scaling(cluster: RayCluster, hosts: int, calls: int = 200) -> float:
    import ray  # noqa: PLC0415 - only once the token is in the environment

    namespace = f"bench-scripted-{hosts}"
    actors: list[Any] = [
        ray.remote(ScriptedHost)
        .options(name=host_actor_name(node.name), namespace=namespace, lifetime="detached",
                 num_cpus=0, resources={f"stockade_host:{node.name}": 0.001})
        .remote(node.name, index >= hosts)
        for index, node in enumerate(cluster.nodes)
    ]  # fmt: skip
    backend = RayBackend(address=cluster.address, namespace=namespace, images=[])
    await backend.start()
    try:
        assert len(backend.hosts) == hosts, backend.hosts
        semaphore = asyncio.Semaphore(8)

        async def one() -> None:
            async with semaphore:
                result = await backend.execute(REQUEST, PROFILE)
                assert result.stdout == "ok\n", result

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return calls / (time.perf_counter() - began)
    finally:
        await backend.close()
        for actor in actors:
            ray.kill(actor)


class Probe:
    """Ray's transport alone: the host's two call protocols with no engine behind them."""

    async def plain(self, payload: bytes) -> tuple[str, bytes]:
        """One return value (``SandboxHost.execute``)."""
        return json.dumps({"ended": "complete", "host_s": 0.0}), _PROBE_REPLY

    async def streamed(self, payload: bytes) -> AsyncIterator[tuple[str, str, bytes]]:
        """The host's streaming generator (``SandboxHost.stream``): started, then the end."""
        yield "started", json.dumps({"from_pool": True}), b""
        yield "end", json.dumps({"ended": "complete", "host_s": 0.0}), _PROBE_REPLY


_PROBE_REPLY = b"".join(
    frame(part) for part in (b'{"exit_code": 0, "stdout_total": 3}', b"ok\n", b"")
)


async def _transport(cluster: RayCluster, rounds: int, pause_s: float) -> dict[str, list[float]]:
    """Interleaved in one run (the order turns each round): the round trip to a probe actor
    on the second node with each protocol; the payload is a trivial call's (~300 bytes).
    One more variant waits ``pause_s`` first (idle, as (b)'s calls are between calls)."""
    import ray  # noqa: PLC0415 - only once the token is in the environment

    node = cluster.nodes[1].name
    probe: Any = (
        ray.remote(Probe)
        .options(namespace="bench-probe", num_cpus=0, resources={f"stockade_host:{node}": 0.001})
        .remote()
    )
    payload = b"x" * 300
    streamed = probe.streamed.options(
        num_returns="streaming", _generator_backpressure_num_objects=1
    )
    unpaced = probe.streamed.options(num_returns="streaming")

    async def plain() -> None:
        await probe.plain.remote(payload)

    async def drain(method: Any) -> None:
        async for ref in method.remote(payload):
            await ref

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "one return value (most calls)": plain,
        "streaming, back-pressure 1 (egress)": lambda: drain(streamed),
        "streaming, no back-pressure (listener)": lambda: drain(unpaced),
    }
    idle = f"one return value after {pause_s:g} s idle"
    names = [*variants, idle]
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds + 10):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            if name == idle:
                await asyncio.sleep(pause_s)
            began = time.perf_counter()
            await variants.get(name, plain)()
            if index >= 10:  # the first rounds warm up
                times[name].append(time.perf_counter() - began)
    ray.kill(probe)
    return times


PROFILE = SandboxProfile(name="bench-ray", image=DEFAULT_IMAGE, pool_size=2)
REQUEST = ExecRequest(argv=("echo", "ok"))


def _quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _series(
    backend: DockerBackend | RayBackend, calls: int, pause_s: float = 0.15
) -> list[float]:
    for _ in range(10):  # warm-up
        await backend.execute(REQUEST, PROFILE)
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        result = await backend.execute(REQUEST, PROFILE)
        latencies.append(time.perf_counter() - began)
        assert result.status is ExecStatus.OK and result.stdout == "ok\n", result
        # Let the pool refill, as between an agent's calls: the engine's
        # create/start rate, not the dispatch, would set the pace otherwise.
        await asyncio.sleep(pause_s)
    return latencies


async def _measure(
    cluster: RayCluster, calls: int, *, scaling_only: bool, pause_s: float = 0.15
) -> None:
    if scaling_only:
        await _print_scaling(cluster)
        return
    client = docker.from_env()
    async with DockerBackend(client, profiles=[PROFILE]) as local:
        await local.wait_warm(PROFILE)
        docker_lat = await _series(local, calls, pause_s)
    client.close()
    remote = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], profiles=[PROFILE])
    await remote.start()
    try:
        ray_lat = await _series(remote, calls, pause_s)
        added = remote.dispatch_overheads[-calls:]
        legs = remote.dispatch_legs[-calls:]
        hosts = {name: host.served for name, host in remote.hosts.items()}
    finally:
        await remote.close()
    print(
        f"calls per series: {calls}, concurrency 1, {pause_s:g} s between calls, "
        f"profile pool_size 2, image {DEFAULT_IMAGE}"
    )
    print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in (
        ("(a) DockerBackend, main engine", docker_lat),
        ("(b) RayBackend, two hosts", ray_lat),
        ("(c) added by Ray (round trip - host)", added),
        ("    of which sent -> host began", [leg[0] for leg in legs]),
        ("    of which host ended -> here", [leg[1] for leg in legs]),
    ):
        p50, p99 = _quantiles(values)
        print(f"{name:<34}{p50:>9.2f}{p99:>9.2f}")
    print(f"calls served per host: {hosts}", flush=True)
    _kill_hosts(cluster)  # the probe and the scripted hosts take the nodes' host resources
    transport = await _transport(cluster, calls * 2, pause_s)
    print(f"(e) Ray's transport alone, probe actor on the second node, {calls * 2} rounds each,"
          " interleaved:")  # fmt: skip
    for name, values in transport.items():
        p50, p99 = _quantiles(values)
        print(f"    {name:<38}{p50:>9.2f}{p99:>9.2f}", flush=True)
    await _print_scaling(cluster)


def _kill_hosts(cluster: RayCluster) -> None:
    """Remove the real host actors of (b): they hold the nodes' host resources."""
    import ray  # noqa: PLC0415 - only once the token is in the environment

    for node in cluster.nodes:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(host_actor_name(node.name), namespace="stockade"))


async def _print_scaling(cluster: RayCluster) -> None:
    _kill_hosts(cluster)
    one = await _scaling(cluster, 1)
    two = await _scaling(cluster, 2)
    print(f"(d) scripted hosts, 50 ms a call: 1 host {one:.1f} calls/s, 2 hosts {two:.1f} calls/s,"
          f" x{two / one:.2f}")  # fmt: skip
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--scaling-only", action="store_true", help="Only (d).")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.15,
        help="Seconds between the calls of (a) and (b), for the pool to refill (default 0.15).",
    )
    args = parser.parse_args()
    builder = ImageBuilder(docker.from_env())
    base = builder.build_base()
    tags = (builder.build_sandbox(base).tag, base.tag)
    # STOCKADE_CLUSTER_SLOT (0-9) as the cluster tests: several developers, one machine.
    slot = int(os.environ.get("STOCKADE_CLUSTER_SLOT", "0"))
    cluster = RayCluster(
        root=Path(f"/tmp/stk-ray-b{slot}"),
        prefix=f"stkb{slot}n",
        subnet=f"10.78.{slot}",
        images=tags,
    )
    cluster.up()
    try:
        os.environ.update(cluster.environment())  # the driver's token, before Ray is imported
        with cluster.enter():
            import ray  # noqa: PLC0415 - only once the token is in the environment

            # Joined before anything else touches Ray: an actor created first
            # would start a local Ray instead, which looks for an address of its own.
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            try:
                asyncio.run(
                    _measure(
                        cluster, args.calls, scaling_only=args.scaling_only, pause_s=args.pause
                    )
                )
            except BaseException:
                # Now: once the cluster is down, Ray's core ends this process (GCS gone)
                # before the traceback would be printed.
                traceback.print_exc()
                raise
            ray.shutdown()
    finally:
        cluster.down()


if __name__ == "__main__":
    stop_on_sigterm()
    main()

"""Dispatch cost of the Ray backend: a trivial call through Ray vs the Docker backend.

Forms the two-node test cluster (``orchestrator.testing.ray_cluster``: two
network namespaces, a second Docker engine; root needed), then, side by side in
one run at concurrency 1, ``echo ok`` in the same image and profile:

  (a) ``DockerBackend.execute`` on the main engine (this process's own pool);
  (b) ``RayBackend.execute`` over the cluster's two hosts (host-a: the main
      engine, host-b: the second engine);
  (c) what Ray adds to each call of (b): the orchestrator's round trip of the
      host's task minus the host's own time (encoding, RPC, object transfer,
      scheduling) — the dispatch cost the target is about (p50 ≤ 2 ms, p99 ≤ 5 ms).

Run: ``.venv/bin/python benchmarks/ray_bench.py [--calls 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import docker

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing.ray_cluster import RayCluster

PROFILE = SandboxProfile(name="bench-ray", image=DEFAULT_IMAGE, pool_size=2)
REQUEST = ExecRequest(argv=("echo", "ok"))


def _quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _series(backend: DockerBackend | RayBackend, calls: int) -> list[float]:
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
        await asyncio.sleep(0.15)
    return latencies


async def _measure(cluster: RayCluster, calls: int) -> None:
    client = docker.from_env()
    async with DockerBackend(client, profiles=[PROFILE]) as local:
        await local.wait_warm(PROFILE)
        docker_lat = await _series(local, calls)
    client.close()
    remote = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], profiles=[PROFILE])
    await remote.start()
    try:
        ray_lat = await _series(remote, calls)
        added = remote.dispatch_overheads[-calls:]
        hosts = {name: host.served for name, host in remote.hosts.items()}
    finally:
        await remote.close()
    print(f"calls per series: {calls}, concurrency 1, profile pool_size 2, image {DEFAULT_IMAGE}")
    print(f"{'path':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in (
        ("(a) DockerBackend, main engine", docker_lat),
        ("(b) RayBackend, two hosts", ray_lat),
        ("(c) added by Ray (round trip - host)", added),
    ):
        p50, p99 = _quantiles(values)
        print(f"{name:<34}{p50:>9.2f}{p99:>9.2f}")
    print(f"calls served per host: {hosts}")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    builder = ImageBuilder(docker.from_env())
    base = builder.build_base()
    tags = (builder.build_sandbox(base).tag, base.tag)
    cluster = RayCluster(root=Path("/tmp/stk-ray-b"), prefix="stkrb", images=tags)
    cluster.up()
    try:
        os.environ.update(cluster.environment())  # the driver's token, before Ray is imported
        with cluster.enter():
            asyncio.run(_measure(cluster, args.calls))
            import ray  # noqa: PLC0415 - only once the token is in the environment

            ray.shutdown()
    finally:
        cluster.down()


if __name__ == "__main__":
    main()

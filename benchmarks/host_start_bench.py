"""How long a pooled tools container takes from its start to its warm tool host being ready.

Every call that takes a container from a warm pool makes the pool start a
replacement: the engine creates and starts it, the runner starts the tool
host, and the host imports the SDK, every toolkit of the image and the
profile's preload list before it says it is ready (the runner's first
frame). This is that time, per built-in profile (``default``: numpy
preloaded; ``http``: ``urllib.request`` preloaded), measured as the backend
launches a pool's container (``ContainerFactory.launch``: create, attach,
start, ready frame).

``--before-image stockade-tools:TAG`` interleaves, launch by launch, the same
profiles on an older tools image (its ``http`` profile with the preload
default of that time, numpy), so a change to the host's imports is measured
side by side in one run.

Run: ``.venv/bin/python benchmarks/host_start_bench.py [--launches 20]
[--runtime runsc] [--before-image stockade-tools:TAG]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import docker
from _bench import stop_on_sigterm

from orchestrator.config import builtin_profiles
from orchestrator.sandbox._container import ContainerFactory
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox.images import TOOLS_IMAGE, ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile


async def launch_time(
    factory: ContainerFactory, profile: SandboxProfile, tag: str, image_id: str
) -> float:
    """One launch, create to ready frame; the container is destroyed after."""
    began = time.perf_counter()
    container = await factory.launch(profile, tag, image_id)
    took = time.perf_counter() - began
    await factory.destroy(container)
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    parser.add_argument("--before-image", default=None)
    args = parser.parse_args()
    client = docker.from_env()
    builder = ImageBuilder(client)
    await asyncio.to_thread(builder.build_all)
    images = {"now": builder.resolve(TOOLS_IMAGE)}
    if args.before_image:
        images["before"] = args.before_image
    ids = {name: str(client.images.get(tag).id) for name, tag in images.items()}
    profiles = builtin_profiles(args.runtime)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench")
    gates = EgressGates()  # the http profile's containers get egress gates
    factory = ContainerFactory(client, executor, gates, backend="host-start-bench")
    print(f"load average at the start {os.getloadavg()[0]:.2f}; images {images}", flush=True)
    samples: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.launches):
        order = list(images) if round_ % 2 else list(reversed(images))
        for name in ("default", "http"):
            for which in order:
                profile = profiles[name]
                if which == "before" and name == "http":
                    # The older images' http profile had no preload list of its own.
                    profile = profile.model_copy(update={"python_preload": None})
                took = await launch_time(factory, profile, images[which], ids[which])
                samples.setdefault((name, which), []).append(took)
    await gates.close()
    executor.shutdown()
    client.close()
    print(f"\n| profile ({args.runtime}) | image | launches | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for (name, which), values in sorted(samples.items()):
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(
            f"| {name} | {which} ({images[which]}) | {len(values)} | "
            f"{statistics.median(values) * 1000:.1f} | {p95 * 1000:.1f} |"
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    asyncio.run(main())

"""CPU one container costs the machine, by what it runs, split by who spends it.

When containers are started as fast as the engine allows (a batch such as
HumanEval, one single-use container per call), CPU is the limit on two
cores, and every millisecond a container costs is throughput. Each row
creates, starts, waits for and removes ``--containers`` containers with
Stockade's hardened options, ``--concurrency`` at a time, and reads the
CPU the machine spent meanwhile (``/proc/stat``), the engine's daemons
(``dockerd``, ``containerd``: ``/proc/PID/stat``) and this process (the
engine client); the rest is the shims, ``runc``, the kernel and the
container's own processes. Rows:

- ``true``: the engine's floor;
- ``python3 -I -S -c pass``: one interpreter, as ``docker run`` of a script pays;
- the tools image's own command, its stdin closed, so the runner starts the
  warm tool host, the host prepares and says ready, and both exit at the
  request that never comes: a pooled container's start, *lean* (started for
  a caller already waiting: ``STOCKADE_LEAN_START=1``; also with the one
  toolkit a HumanEval-like profile serves: ``STOCKADE_TOOLKITS``) and *full*
  (every toolkit of the image and the profile's preloads: numpy and the state
  serialiser).

``--before-image stockade-tools:TAG`` adds the full row of an older tools
image, so a change to the runner or the host is measured in the same run.

Run: ``.venv/bin/python benchmarks/container_cpu_bench.py [--containers 100]
[--concurrency 4] [--runtime runsc] [--before-image stockade-tools:TAG]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
from _bench import stop_on_sigterm
from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

from orchestrator.sandbox._container import container_options
from orchestrator.sandbox.images import TOOLS_IMAGE, ImageBuilder
from orchestrator.sandbox.profile import LEAN_START_ENV, TOOLKITS_ENV, SandboxProfile

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """CPU seconds spent so far: the machine, this process, and the engine's daemons."""

    machine: float
    client: float
    dockerd: float
    containerd: float


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _machine_busy() -> float:
    with open("/proc/stat", encoding="ascii") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS  # all but idle and iowait


def _pid(name: str) -> int:
    return int(subprocess.check_output(["pidof", "-s", name]).split()[0])


def sample(dockerd: int, containerd: int) -> Sample:
    """The counters now."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return Sample(
        machine=_machine_busy(),
        client=own.ru_utime + own.ru_stime,
        dockerd=_process_cpu(dockerd),
        containerd=_process_cpu(containerd),
    )


def run_row(
    api: docker.APIClient, options: dict[str, Any], containers: int, concurrency: int
) -> tuple[float, dict[str, float]]:
    """Wall seconds, and CPU milliseconds per container by who spent them."""
    create = {key: value for key, value in options.items() if key in RUN_CREATE_KWARGS}
    host = {key: value for key, value in options.items() if key in RUN_HOST_CONFIG_KWARGS}

    def one(_: int) -> None:
        made = api.create_container(**create, host_config=api.create_host_config(**host))
        try:
            api.start(made["Id"])
            api.wait(made["Id"], timeout=60)
        finally:
            api.remove_container(made["Id"], force=True)

    dockerd, containerd = _pid("dockerd"), _pid("containerd")
    before = sample(dockerd, containerd)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as workers:
        list(workers.map(one, range(containers)))
    wall = time.perf_counter() - began
    after = sample(dockerd, containerd)
    spent = {
        "total": after.machine - before.machine,
        "client": after.client - before.client,
        "dockerd": after.dockerd - before.dockerd,
        "containerd": after.containerd - before.containerd,
    }
    spent["rest"] = spent["total"] - spent["client"] - spent["dockerd"] - spent["containerd"]
    return wall, {who: 1000 * seconds / containers for who, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    parser.add_argument("--before-image", default=None)
    args = parser.parse_args()
    client = docker.from_env()
    builder = ImageBuilder(client)
    builder.build_all()
    image = builder.resolve(TOOLS_IMAGE)
    profile = SandboxProfile(runtime=args.runtime)

    def variant(image: str = image, **update: Any) -> Callable[[], dict[str, Any]]:
        def options() -> dict[str, Any]:
            made = container_options(profile, image)
            made.update(stdin_open=False, **update)  # the runner reads EOF: no request
            return made

        return options

    rows = [
        ("`true` (the engine's floor)", variant(command=["true"])),
        ("`python3 -I -S -c pass`", variant(command=["python3", "-I", "-S", "-c", "pass"])),
        ("runner + warm tool host, lean", variant(environment={LEAN_START_ENV: "1"})),
        (
            "the same, a profile of `toolkits.python` alone",
            variant(environment={LEAN_START_ENV: "1", TOOLKITS_ENV: "toolkits.python"}),
        ),
        ("runner + warm tool host, full (numpy, serialiser)", variant()),
    ]
    if args.before_image:
        rows.append((f"the same on {args.before_image}", variant(image=args.before_image)))
    print(f"load average at the start {os.getloadavg()[0]:.2f}; runtime {args.runtime}, "
          f"{args.containers} containers a row, {args.concurrency} at a time")  # fmt: skip
    print("\n| container runs | wall s | CPU ms a container | client | dockerd | containerd "
          "| rest (shims, runc, kernel, container) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, options in rows:
        wall, per = run_row(client.api, options(), args.containers, args.concurrency)
        print(f"| {label} | {wall:.1f} | {per['total']:.0f} | {per['client']:.0f} | "
              f"{per['dockerd']:.0f} | {per['containerd']:.0f} | {per['rest']:.0f} |",
              flush=True)  # fmt: skip
    client.close()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    stop_on_sigterm()
    main()

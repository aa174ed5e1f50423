"""A real two-node Ray cluster on one machine, for tests and for trying scale-out.

Ray resolves ``127.0.0.1`` to the machine's own interface address and refuses
several nodes on loopback, so each node gets a network namespace of its own,
joined to the other by a veth pair with addresses this module assigns
(``10.77.0.1/24`` and ``10.77.0.2/24`` by default). Nothing listens on, or
advertises, the machine's own addresses:

- ns ``<prefix>1``: the Ray head (GCS on port 6390, never Redis's 6379), whose
  host uses the machine's main Docker engine (a Unix socket reaches it from any
  namespace);
- ns ``<prefix>2``: a Ray worker node and a **second Docker engine** (its own
  data root, exec root, socket, pid file, containerd, cgroup parent; ``runsc``
  registered as ``scripts/setup.sh`` does), loaded with the main engine's
  Stockade images.

Both nodes carry the ``stockade_host`` resource, run with token
authentication, a capped object store, their own ``--temp-dir``, no dashboard
and no usage statistics. The driver (the orchestrator) must run inside the
head's namespace: :meth:`RayCluster.enter` moves the calling thread there.

``python -m orchestrator.testing.ray_cluster up|down`` forms or removes the
cluster from a shell (as root); :class:`RayCluster` does the same in tests.
Teardown removes every container on the second engine, the engine and its
directories, every process in the namespaces, and the namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HOST_RESOURCE", "RayCluster", "RayNode"]

HOST_RESOURCE = "stockade_host"
"""The custom Ray resource that marks a node with a Docker engine Stockade may use."""

_GCS_PORT = 6390
_CLONE_NEWNET = 0x40000000
_ENGINE_PROGRAMS = ("dockerd", "containerd", "runc", "runsc", "docker-")
# Fixed ports inside each namespace (each has its own port space).
_PORTS = {
    "--node-manager-port": 6391,
    "--object-manager-port": 6392,
    "--runtime-env-agent-port": 6393,
    "--dashboard-agent-listen-port": 6394,
    "--dashboard-agent-grpc-port": 6395,
    "--metrics-export-port": 6396,
    "--min-worker-port": 10002,
    "--max-worker-port": 10200,
}


def _run(*argv: str, check: bool = True, timeout: float = 120.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class RayNode:
    """One node of the cluster: its namespace, address, Ray temp dir and Docker socket."""

    name: str
    """The operator-assigned host name (also the host actor's name)."""
    netns: str
    address: str
    temp_dir: Path
    docker_host: str
    """``unix://…`` socket of the node's Docker engine."""


@dataclass
class RayCluster:
    """Forms and removes the two-node cluster (root needed: namespaces, dockerd)."""

    root: Path = Path("/tmp/stk-ray")
    """Directory for Ray temp dirs and the second engine; removed at teardown (keep it short:
    Unix socket paths are limited to 107 bytes)."""
    prefix: str = "stkray"
    subnet: str = "10.77.0"
    object_store_bytes: int = 80 * 1024 * 1024
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    images: tuple[str, ...] = ()
    """Image references copied from the main engine to the second (``docker save | load``)."""
    nodes: list[RayNode] = field(default_factory=list)
    _dockerd: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The GCS address drivers connect to."""
        return f"{self.subnet}.1:{_GCS_PORT}"

    @property
    def head_netns(self) -> str:
        return f"{self.prefix}1"

    def write_config(
        self, directory: Path, *, address: str | None = None, top: str = "", sandbox: str = ""
    ) -> Path:
        """A ``stockade.yaml`` in ``directory`` that runs sandboxes on this cluster.

        Its state directory is ``directory/state``. ``address`` replaces the
        cluster's (to point at something that does not answer); ``top`` adds
        top-level lines, ``sandbox`` lines under ``sandbox:`` (two-space indented).
        """
        path = directory / "stockade.yaml"
        path.write_text(
            f"state_dir: {directory / 'state'}\n{top}"
            f"sandbox:\n  engine: ray\n  ray:\n    address: {address or self.address}\n{sandbox}"
        )
        return path

    def environment(self) -> dict[str, str]:
        """What every Ray process (nodes and drivers) needs in its environment."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    # -- forming ---------------------------------------------------------

    def up(self) -> None:
        """Form the cluster; on any failure, remove what was made and raise."""
        taken = [
            ns for ns in (f"{self.prefix}1", f"{self.prefix}2") if Path(f"/run/netns/{ns}").exists()
        ]
        if taken or self.root.exists():
            # Another cluster of these names is up (or a killed run left it): not ours to remove.
            raise RuntimeError(
                f"network namespace(s) {taken} or {self.root} already exist: another cluster of "
                f"these names is running, or a killed run left it (remove it with "
                f"`python -m orchestrator.testing.ray_cluster down --prefix {self.prefix} --root "
                f"{self.root}` when nothing uses it)"
            )
        try:
            self._network()
            self.root.mkdir(parents=True, exist_ok=True)
            second = self._second_engine()
            self.nodes = [
                RayNode(
                    "host-a",
                    self.head_netns,
                    f"{self.subnet}.1",
                    self.root / "r1",
                    "unix:///var/run/docker.sock",
                ),
                RayNode("host-b", f"{self.prefix}2", f"{self.subnet}.2", self.root / "r2", second),
            ]
            self._start_ray(self.nodes[0], head=True)
            self._start_ray(self.nodes[1], head=False)
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        first, second = f"{self.prefix}1", f"{self.prefix}2"
        for ns in (first, second):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            "ip",
            "link",
            "add",
            f"{self.prefix}a",
            "netns",
            first,
            "type",
            "veth",
            "peer",
            "name",
            f"{self.prefix}b",
            "netns",
            second,
        )
        for ns, dev, host in ((first, "a", 1), (second, "b", 2)):
            _run(
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                f"{self.subnet}.{host}/24",
                "dev",
                f"{self.prefix}{dev}",
            )
            _run("ip", "-n", ns, "link", "set", f"{self.prefix}{dev}", "up")

    def _second_engine(self) -> str:
        base = self.root / "d2"
        base.mkdir(parents=True, exist_ok=True)
        runsc = shutil.which("runsc") or "/usr/bin/runsc"
        config = {
            "runtimes": {
                "runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
                "runsc-egress": {
                    "path": runsc,
                    "runtimeArgs": ["--network=none", "--host-uds=open"],
                },
            }
        }
        (base / "daemon.json").write_text(json.dumps(config))
        socket_path = base / "docker.sock"
        with (base / "dockerd.log").open("ab") as log:  # the child keeps its own copy
            self._dockerd = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.prefix}2",
                    "dockerd",
                    "--config-file",
                    str(base / "daemon.json"),
                    "--data-root",
                    str(base / "data"),
                    "--exec-root",
                    str(base / "exec"),
                    "-H",
                    f"unix://{socket_path}",
                    "--pidfile",
                    str(base / "docker.pid"),
                    "--cgroup-parent",
                    f"/{self.prefix}-engine2",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        host = f"unix://{socket_path}"
        deadline = time.monotonic() + 60
        while not _run(
            "docker", "-H", host, "version", "--format", "{{.Server.Version}}", check=False
        ).strip():
            if self._dockerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second dockerd did not start; see {base / 'dockerd.log'}")
            time.sleep(0.5)
        if self.images:
            save = subprocess.Popen(["docker", "save", *self.images], stdout=subprocess.PIPE)
            load = subprocess.run(
                ["docker", "-H", host, "load", "-q"],
                stdin=save.stdout,
                capture_output=True,
                check=False,
            )
            if save.stdout is not None:
                save.stdout.close()  # a failed load must not leave save blocked on the pipe
            if save.wait() != 0 or load.returncode != 0:
                raise RuntimeError(f"loading images into the second engine: {load.stderr!r}")
        return host

    def _start_ray(self, node: RayNode, *, head: bool) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter",
            f"--net=/run/netns/{node.netns}",
            str(Path(sys.executable).parent / "ray"),
            "start",
            f"--node-ip-address={node.address}",
            f"--temp-dir={node.temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            "--num-cpus=1",
            f"--resources={json.dumps({HOST_RESOURCE: 1, f'{HOST_RESOURCE}:{node.name}': 1})}",
            "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in _PORTS.items()),
        ]
        if head:
            argv += ["--head", f"--port={_GCS_PORT}", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}"]
        # The node's host actor reaches the node's engine through DOCKER_HOST; `env`
        # adds the variables to this process's environment for the child. Not the
        # token: a command line is world-readable (ps), and the token is as good as
        # root on every node. Ray reads it from a file only root can read instead.
        extra = {
            **self.environment(),
            "DOCKER_HOST": node.docker_host,
            "RAY_AUTH_TOKEN_PATH": str(self._token_file()),
        }
        del extra["RAY_AUTH_TOKEN"]
        # The node's temporary files (its host's egress gates among them) under the
        # cluster's root, which teardown removes: a node killed with SIGKILL never
        # removes its own, and they would outlive the cluster in /tmp.
        scratch = self.root / f"{node.name}-tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        extra["TMPDIR"] = str(scratch)
        if head:
            # A node that stops answering is declared dead after ~3 s, not ~30 s.
            extra |= {
                "RAY_health_check_period_ms": "1000",
                "RAY_health_check_failure_threshold": "3",
            }
        argv = ["env", *(f"{key}={value}" for key, value in extra.items()), *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start on {node.name} failed: {done.stdout}{done.stderr}")

    def _token_file(self) -> Path:
        """The token in a file of the cluster's root that only its owner reads (the nodes'
        ``RAY_AUTH_TOKEN_PATH``); removed with the root at teardown."""
        path = self.root / "auth_token"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(self.token)
        return path

    # -- using -----------------------------------------------------------

    @contextlib.contextmanager
    def enter(self, node: int = 0) -> Iterator[None]:
        """Run the calling thread (and threads it starts later) in the head's namespace
        (``node``: another node's, e.g. to listen on that node's loopback).

        A Ray driver must be on a node of the cluster. It also needs
        :meth:`environment` (the token) in its environment before Ray is
        imported: that is the caller's to set.
        """
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.nodes[node].netns}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.nodes[node].name}'s namespace")
            yield
        finally:
            libc.setns(own, _CLONE_NEWNET)
            os.close(own)
            os.close(target)

    def kill_node(self, index: int) -> None:
        """Kill every Ray process of one node at once (SIGKILL), as a crashed machine would."""
        for pid in self._ray_pids(self.nodes[index].netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart_node(self, index: int) -> None:
        """Start the Ray node of ``index`` again (its engine kept running)."""
        self._start_ray(self.nodes[index], head=index == 0)

    @staticmethod
    def _ray_pids(netns: str) -> list[int]:
        """Processes of the namespace that are not the engine's (dockerd, containerd, shims)."""
        found = []
        for raw in _run("ip", "netns", "pids", netns, check=False).split():
            pid = int(raw)
            try:
                exe = Path(os.readlink(f"/proc/{pid}/exe")).name
            except OSError:
                continue
            if pid != os.getpid() and not exe.startswith(_ENGINE_PROGRAMS):
                found.append(pid)
        return found

    # -- removing --------------------------------------------------------

    def down(self) -> None:
        """Remove everything :meth:`up` made; safe to call twice or after a partial start."""
        for node in self.nodes:
            self._kill_all(node.netns, engine_too=False)
        second = self.root / "d2" / "docker.sock"
        pidfile = self.root / "d2" / "docker.pid"
        if second.exists():
            listed = _run("docker", "-H", f"unix://{second}", "ps", "-aq", check=False)
            if listed.split():
                _run("docker", "-H", f"unix://{second}", "rm", "-f", *listed.split(), check=False)
        if self._dockerd is None:
            with contextlib.suppress(OSError, ValueError):
                _stop(int(pidfile.read_text()))
        else:
            self._dockerd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._dockerd.wait(timeout=30)
            self._dockerd.kill()
            self._dockerd.wait()
            self._dockerd = None
        for ns in (f"{self.prefix}1", f"{self.prefix}2"):
            if Path(f"/run/netns/{ns}").exists():
                self._kill_all(ns, engine_too=True)
                _run("ip", "netns", "delete", ns, check=False)
        if self.root.exists():
            # the engine's overlay mounts must go before its directories can
            for line in Path("/proc/self/mounts").read_text().splitlines():
                mount = line.split()[1]
                if mount.startswith(str(self.root)):
                    _run("umount", "-l", mount, check=False)
            shutil.rmtree(self.root, ignore_errors=True)
        self.nodes = []

    def _kill_all(self, netns: str, *, engine_too: bool) -> None:
        if not Path(f"/run/netns/{netns}").exists():
            return
        pids = self._ray_pids(netns)
        if engine_too:
            pids = [int(p) for p in _run("ip", "netns", "pids", netns, check=False).split()]
            pids = [pid for pid in pids if pid != os.getpid()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.1)


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL after 30 s; returns when ``pid`` is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """``up [IMAGE...]`` forms the cluster and prints its address and token; ``down`` removes
    it. ``--prefix`` and ``--root`` name another cluster (the tests': ``stkrt``,
    ``/tmp/stk-ray-t``; the benchmark's: ``stkrb``, ``/tmp/stk-ray-b``)."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.testing.ray_cluster")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("images", nargs="*", help="images to copy to the second engine (up)")
    parser.add_argument("--prefix", default="stkray", help="network namespace name prefix")
    parser.add_argument("--root", type=Path, default=Path("/tmp/stk-ray"))
    args = parser.parse_args(argv)
    cluster = RayCluster(root=args.root, prefix=args.prefix, images=tuple(args.images))
    if args.action == "up":
        cluster.up()
        print(json.dumps({"address": cluster.address, "token": cluster.token}))
    else:
        cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

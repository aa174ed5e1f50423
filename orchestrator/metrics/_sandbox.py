"""The sandbox layer's metrics: engine operations, executions, warm pools, reaping, egress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.metrics._buckets import SANDBOX_OPERATION_SECONDS
from orchestrator.metrics._factory import InstrumentFactory

__all__ = ["OPERATIONS", "POOL_STATES", "RUNTIMES", "PoolSize", "SandboxMetrics"]

OPERATIONS = ("create", "start", "exec", "remove")
"""What ``stockade_sandbox_operation_duration_seconds`` times: the engine creating a
container, starting it until its runner is ready, one call's exchange with it, removing it."""
RUNTIMES = ("runc", "runsc")
"""The container runtimes a profile may name."""
POOL_STATES = ("ready", "starting")
"""A pooled container is started and waiting, or still starting."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolSize:
    """One warm pool's containers right now."""

    profile: str
    ready: int
    starting: int
    target: int


PoolSource = Callable[[], Iterable[PoolSize]]
"""Reports the pools of one backend when Prometheus scrapes."""


class _Pools(Collector):
    """Reads the pools' sizes at scrape time: a gauge kept in step would cost every acquire."""

    def __init__(self) -> None:
        self.sources: list[PoolSource] = []
        self.profiles: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "stockade_sandbox_pool_size",
            "Containers in the warm pools, by profile and state (ready, starting).",
            labels=["profile", "state"],
        )
        target = GaugeMetricFamily(
            "stockade_sandbox_pool_target_size",
            "Containers each warm pool keeps ready, by profile.",
            labels=["profile"],
        )
        totals = {name: [0, 0, 0] for name in self.profiles}
        for source in list(self.sources):
            for pool in source():
                entry = totals.setdefault(pool.profile, [0, 0, 0])
                entry[0] += pool.ready
                entry[1] += pool.starting
                entry[2] += pool.target
        for name, (ready, starting, wanted) in sorted(totals.items()):
            size.add_metric([name, "ready"], ready)
            size.add_metric([name, "starting"], starting)
            target.add_metric([name], wanted)
        yield size
        yield target


class SandboxMetrics:
    """Instruments of the sandbox backend (``metrics.sandbox``)."""

    def __init__(self, make: InstrumentFactory) -> None:
        self.operation_duration = make.histogram(
            "stockade_sandbox_operation_duration_seconds",
            "Duration of sandbox operations (create, start, exec, remove), by runtime.",
            ["operation", "runtime"],
            buckets=SANDBOX_OPERATION_SECONDS,
        )
        self.executions = make.counter(
            "stockade_sandbox_executions",
            "Calls run in a sandbox, by profile, runtime and outcome.",
            ["profile", "runtime", "status"],
        )
        self.pool_acquisitions = make.counter(
            "stockade_sandbox_pool_acquisitions",
            "Containers taken for a call, by profile (warm from the pool or not).",
            ["profile"],
        )
        self.pool_misses = make.counter(
            "stockade_sandbox_pool_misses",
            "Calls that found the pool empty and waited for a fresh container, by profile.",
            ["profile"],
        )
        self.oom_kills = make.counter(
            "stockade_sandbox_oom_kills",
            "Sandboxes killed for running out of memory, by profile.",
            ["profile"],
        )
        self.timeouts = make.counter(
            "stockade_sandbox_timeouts",
            "Calls killed at their deadline, by profile.",
            ["profile"],
        )
        self.reaped = make.counter(
            "stockade_sandbox_containers_reaped",
            "Leftover containers removed by the reaper (owner gone or deadline passed).",
        )
        self.egress_connections = make.counter(
            "stockade_egress_connections",
            "Connections sandboxes tried through the egress proxy, by profile and outcome "
            "(allowed, refused).",
            ["profile", "outcome"],
        )
        self.egress_credentials = make.counter(
            "stockade_egress_credentials",
            "Connections to which the egress proxy added a secret, by profile and the "
            "secret's name (never its value).",
            ["profile", "secret"],
        )
        self._pools = _Pools()
        if make.enabled:
            make.registry.register(self._pools)

    def declare(self, profiles: Iterable[tuple[str, str]], statuses: Iterable[str]) -> None:
        """Create every series of these (profile, runtime) pairs at zero, and of every
        runtime and operation; ``statuses`` are the execution outcomes."""
        outcomes = tuple(statuses)
        for runtime in RUNTIMES:
            for operation in OPERATIONS:
                self.operation_duration.labels(operation, runtime)
        for profile, runtime in profiles:
            self._pools.profiles.add(profile)
            for status in outcomes:
                self.executions.labels(profile, runtime, status)
            for counter in (
                self.pool_acquisitions,
                self.pool_misses,
                self.oom_kills,
                self.timeouts,
            ):
                counter.labels(profile)
            for outcome in ("allowed", "refused"):
                self.egress_connections.labels(profile, outcome)

    def watch_pools(self, source: PoolSource) -> Callable[[], None]:
        """Report ``source``'s pools from now on; call the result to stop."""
        self._pools.sources.append(source)

        def stop() -> None:
            if source in self._pools.sources:
                self._pools.sources.remove(source)

        return stop

    def operation(self, operation: str, runtime: str, seconds: float) -> None:
        """One engine operation took ``seconds``."""
        self.operation_duration.labels(operation, runtime).observe(seconds)

    def egress(self, profile: str, *, allowed: bool) -> None:
        """A sandbox of ``profile`` tried a connection through the proxy."""
        self.egress_connections.labels(profile, "allowed" if allowed else "refused").inc()

    def credential_used(self, profile: str, secret: str) -> None:
        """The proxy added secret ``secret`` (its name) to a connection of ``profile``."""
        self.egress_credentials.labels(profile, secret).inc()

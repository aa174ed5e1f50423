"""The sandbox hosts' metrics (the ``ray`` engine): one series per host the operator named.

The ``host`` label is the operator-assigned host name (``stockade_host:<name>``),
never Ray's node id: a cluster has as many values as it has sandbox hosts, and
a host keeps its series when its node is replaced. Calls, calls in flight, warm
pools and up/draining are read from the backend at scrape time (the backend
already counts them for placement); the dispatch histogram is observed per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.metrics._buckets import HOST_DISPATCH_SECONDS
from orchestrator.metrics._factory import InstrumentFactory

__all__ = ["HostMetrics", "HostSample"]


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSample:
    """One host as one orchestrator sees it, at scrape time."""

    host: str
    up: bool
    """Registered and answering (a lost host, or one that refused to register, is down)."""
    draining: bool = False
    calls: int = 0
    """Calls of this orchestrator the host answered."""
    in_flight: int = 0
    """Calls of this orchestrator on the host now."""
    pools: Mapping[str, int] = field(default_factory=dict)
    """This orchestrator's warm containers on the host, by profile name."""


HostSource = Callable[[], Iterable[HostSample]]
"""Reports one backend's hosts when Prometheus scrapes."""


class _Hosts(Collector):
    """Reads the hosts of every watching backend at scrape time."""

    def __init__(self) -> None:
        self.sources: list[HostSource] = []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily(
            "stockade_host_up",
            "1 while a sandbox host is registered and answering, 0 when lost or refused.",
            labels=["host"],
        )
        draining = GaugeMetricFamily(
            "stockade_host_draining",
            "1 while a sandbox host is drained (stockade hosts drain): it gets no new calls.",
            labels=["host"],
        )
        calls = CounterMetricFamily(
            "stockade_host_calls",
            "Calls a sandbox host answered for this orchestrator, by host.",
            labels=["host"],
        )
        in_flight = GaugeMetricFamily(
            "stockade_host_calls_in_flight",
            "Calls of this orchestrator running on a sandbox host now, by host.",
            labels=["host"],
        )
        pools = GaugeMetricFamily(
            "stockade_host_pool_ready",
            "Warm containers this orchestrator has ready on a sandbox host, by host and profile.",
            labels=["host", "profile"],
        )
        seen: dict[str, HostSample] = {}
        for source in list(self.sources):
            for sample in source():
                seen[sample.host] = sample
        for name, sample in sorted(seen.items()):
            up.add_metric([name], 1 if sample.up else 0)
            draining.add_metric([name], 1 if sample.draining else 0)
            calls.add_metric([name], sample.calls)
            in_flight.add_metric([name], sample.in_flight)
            for profile, ready in sorted(sample.pools.items()):
                pools.add_metric([name, profile], ready)
        yield from (up, draining, calls, in_flight, pools)


class HostMetrics:
    """Instruments of the sandbox hosts (``metrics.hosts``); empty under the docker engine."""

    def __init__(self, make: InstrumentFactory) -> None:
        self.dispatch = make.histogram(
            "stockade_host_dispatch_duration_seconds",
            "What dispatching a call to a sandbox host adds (the round trip minus the host's "
            "own time: Ray, the object store, the network), by host.",
            ["host"],
            buckets=HOST_DISPATCH_SECONDS,
        )
        self._hosts = _Hosts()
        if make.enabled:
            make.registry.register(self._hosts)

    def watch(self, source: HostSource) -> None:
        """Report ``source``'s hosts at every scrape (the Ray backend calls this)."""
        self._hosts.sources.append(source)

"""The egress proxy: allowed hosts reachable, everything else refused before connecting.

Traffic goes to 127.0.0.1 only. The connector is guarded: any attempt to
connect to a non-loopback address fails the test before a packet is sent, and
the resolver knows only the test's own names (it never asks a real DNS server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.sandbox.egress import (
    EgressConnection,
    EgressPolicy,
    EgressProxy,
    refusal_for_address,
)
from orchestrator.testing import FixedResolver, HttpRequest, LoopbackOnlyConnector, serve_http

FORWARDER = (
    Path(__file__).resolve().parents[2] / "sandbox_images" / "runner" / "egress_forwarder.py"
)
BIG = 1_000_000


def origin_app(request: HttpRequest) -> tuple[int, bytes]:
    if request.path == "/big":
        return 200, b"x" * BIG
    return 200, f"hello from {request.path}".encode()


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    with serve_http(origin_app) as port:
        yield port


TEST_NAMES: dict[str, list[str]] = {
    "origin.test": ["127.0.0.1"],
    "rebinds-to-private.test": ["10.0.0.7"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["127.0.0.1", "192.168.1.1"],
}


@pytest.fixture(scope="module")
def forwarder_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("egress_forwarder", FORWARDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Setup:
    def __init__(self, port: int, events: list[EgressConnection], proxy: EgressProxy) -> None:
        self.proxy_port = port
        self.events = events
        self.proxy = proxy

    async def settled(self) -> list[EgressConnection]:
        """The events once every connection has been reported (bounded wait)."""
        assert await self.proxy.wait_idle(5.0), "a proxied connection did not end"
        return self.events

    def get(self, url: str) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{self.proxy_port}"})
        )
        try:
            with opener.open(url, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def connect(self, target: str, then: bytes = b"") -> bytes:
        with socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10) as sock:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + then)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if then and b"hello" in b"".join(chunks):
                    break
            return b"".join(chunks)


@pytest.fixture
async def egress(tmp_path: Path, origin: int, forwarder_module: ModuleType) -> AsyncIterator[Setup]:
    policy = EgressPolicy(
        allow=(
            f"127.0.0.1:{origin}",
            f"origin.test:{origin}",
            "*.test",
            "10.1.2.3",
            "*.example.invalid:1",
        ),
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        max_bytes=100_000,
    )
    events: list[EgressConnection] = []
    resolver, connector = FixedResolver(TEST_NAMES), LoopbackOnlyConnector()
    proxy = EgressProxy(
        policy,
        on_event=events.append,
        resolver=resolver,
        connector=connector,
    )
    server = await proxy.serve(tmp_path / "egress.sock")
    listener, port = forwarder_module.start_forwarder(str(tmp_path / "egress.sock"))
    yield Setup(port, events, proxy)
    listener.close()
    server.close()
    await server.wait_closed()
    assert connector.violations == [], "the proxy tried to connect beyond loopback"
    assert resolver.unknown == [], "the proxy resolved a name it should have refused first"


async def test_allowed_host_is_reachable(egress: Setup, origin: int) -> None:
    status, body = await asyncio.to_thread(egress.get, f"http://127.0.0.1:{origin}/x?y=1")
    assert (status, body) == (200, b"hello from /x?y=1")
    status, body = await asyncio.to_thread(egress.get, f"http://origin.test:{origin}/named")
    assert (status, body) == (200, b"hello from /named")
    events = await egress.settled()
    assert [event.allowed for event in events] == [True, True]
    assert events[0].bytes_in > 0 and events[0].address == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{other}/", "not in the egress allowlist"),
        ("http://unlisted.invalid/", "not in the egress allowlist"),
        ("http://10.1.2.3/", "private address"),
        ("http://rebinds-to-private.test/", "private address"),
        ("http://metadata.test/", "link-local"),
        ("http://mixed.test/", "private address"),
        ("http://169.254.169.254/latest/meta-data/", "not in the egress allowlist"),
    ],
)
async def test_refused_before_connecting(egress: Setup, origin: int, url: str, reason: str) -> None:
    status, body = await asyncio.to_thread(egress.get, url.format(other=origin + 1))
    assert status == 403
    assert reason in body.decode()
    (event,) = await egress.settled()
    assert not event.allowed
    assert reason in event.reason


async def test_connect_tunnel_allowed_and_refused(egress: Setup, origin: int) -> None:
    tunnel = await asyncio.to_thread(
        egress.connect, f"127.0.0.1:{origin}", b"GET /tunnel HTTP/1.0\r\n\r\n"
    )
    assert tunnel.startswith(b"HTTP/1.1 200 Connection established")
    assert b"hello from /tunnel" in tunnel
    refused = await asyncio.to_thread(egress.connect, "blocked.invalid:443")
    assert refused.startswith(b"HTTP/1.1 403")
    ip_literal = await asyncio.to_thread(egress.connect, "10.1.2.3:443")
    assert b"private address" in ip_literal


async def test_byte_cap_cuts_the_connection(egress: Setup, origin: int) -> None:
    def fetch() -> bytes:
        try:
            return egress.get(f"http://127.0.0.1:{origin}/big")[1]
        except Exception as exc:  # a cut connection surfaces as several error types
            return repr(exc).encode()

    body = await asyncio.to_thread(fetch)
    assert len(body) < BIG
    (event,) = await egress.settled()
    assert "byte cap" in event.reason
    assert event.bytes_in <= 100_000


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", None),
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not a public"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "private"),
        # Python counts these global; a relay or a site's routes deliver them inward.
        ("2002:a00:7::1", "6to4 address of 10.0.0.7: 10.0.0.7 is a private"),
        ("2002:7f00:1::", "6to4 address of 127.0.0.1"),
        ("2002:808:808::1", None),  # 8.8.8.8 behind 6to4
        ("fec0::1", "site-local"),
    ],
)
def test_address_rules(address: str, refused: str | None) -> None:
    reason = refusal_for_address(ipaddress.ip_address(address))
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_allowlist_globs_and_ports() -> None:
    policy = EgressPolicy(allow=("*.github.com", "pypi.org:443", "example.com:8080"))
    assert policy.allows("api.github.com", 443) and policy.allows("API.GitHub.com.", 80)
    assert not policy.allows("github.com.evil.net", 443)
    assert policy.allows("pypi.org", 443) and not policy.allows("pypi.org", 80)
    assert policy.allows("example.com", 8080) and not policy.allows("example.com", 443)
    assert not EgressPolicy().allows("anything.com", 443), "no allowlist: nothing"


async def test_the_guards_catch_what_the_proxy_must_never_do() -> None:
    """The guards themselves: a check that cannot fail is no check."""
    connector, resolver = LoopbackOnlyConnector(), FixedResolver({"known.test": ["10.0.0.1"]})
    with pytest.raises(ConnectionRefusedError):
        await connector(ipaddress.ip_address("10.0.0.1"), 80)
    assert connector.violations == ["10.0.0.1:80"]
    with pytest.raises(OSError, match=r"unknown\.test"):
        await resolver("unknown.test", 80)
    assert resolver.unknown == ["unknown.test"]
    assert await resolver("known.test", 80) == [ipaddress.ip_address("10.0.0.1")]


async def test_the_time_cap_counts_from_the_connection_not_the_request(tmp_path: Path) -> None:
    """A client that never finishes its request head holds the proxy no longer than the
    cap (slowloris), and one that finishes it late gets only what is left of the cap."""
    policy = EgressPolicy(allow=("origin.test",), max_seconds=0.5)
    events: list[EgressConnection] = []
    resolver, connector = FixedResolver(TEST_NAMES), LoopbackOnlyConnector()
    proxy = EgressProxy(policy, on_event=events.append, resolver=resolver, connector=connector)
    server = await proxy.serve(tmp_path / "egress.sock")
    try:
        reader, writer = await asyncio.open_unix_connection(tmp_path / "egress.sock")
        writer.write(b"CONNECT origin.test:443 HTTP/1.1\r\n")  # and never the blank line
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert await proxy.wait_idle(5.0)
        (event,) = events
        assert not event.allowed and "time cap of 0.5 s" in event.reason
        assert event.duration_s < 2.0
    finally:
        server.close()
        await server.wait_closed()
    assert connector.violations == [] and resolver.unknown == []

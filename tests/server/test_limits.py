"""Request limits: bodies over the size limit and JSON nested too deep are refused unparsed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.server import json_depth
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve, server_config


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Served]:
    config = server_config(tmp_path / "state", max_body_bytes=4096, max_json_depth=8)
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as running:
        running.tokens = tokens
        yield running


def nested(depth: int) -> object:
    """A call body that nests ``depth`` deep (the body and its arguments are two levels)."""
    value: object = "leaf"
    for level in range(depth - 2):
        value = [value] if level % 2 else {"k": value}
    return {"id": "c", "name": "python.run", "run_id": "r", "arguments": {"code": value}}


async def test_an_oversized_body_is_refused(small: Served) -> None:
    big = {"id": "c", "name": "python.run", "run_id": "r", "arguments": {"code": "x" * 5000}}
    async with small.client("caller") as client:
        declared = await client.post("/v1/tool-calls", json=big)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000  # no Content-Length: counted as it arrives

        streamed = await client.post(
            "/v1/tool-calls", content=chunks(), headers={"content-type": "application/json"}
        )
        fits = await client.post("/v1/tool-calls", json={**big, "arguments": {"code": "1"}})
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "body_too_large"
    assert fits.json()["status"] == "ok"
    assert not [r for r in small.audit_records() if r["event"] == "call"][:-1]


async def test_a_deeply_nested_body_is_refused(small: Served) -> None:
    async with small.client("caller") as client:
        too_deep = await client.post("/v1/tool-calls", json=nested(9))
        brackets_in_strings = await client.post(
            "/v1/tool-calls",
            json={"id": "c", "name": "python.run", "run_id": "r",
                  "arguments": {"code": "print([[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]])"}},
        )  # fmt: skip
        deep_enough = await client.post("/v1/tool-calls", json=nested(8))
        without_type = await client.post("/v1/tool-calls", content=json.dumps(nested(9)))
    assert too_deep.status_code == 400
    assert too_deep.json()["code"] == "json_too_deep"
    assert without_type.status_code == 400  # parsed as JSON without a type, so checked too
    assert brackets_in_strings.json()["status"] == "ok"
    assert deep_enough.status_code == 200  # the tool refuses it; the server read it
    assert deep_enough.json()["status"] == "invalid_arguments"


async def test_a_body_trickling_in_is_refused_after_its_deadline(tmp_path: Path) -> None:
    """A client sends its headers and then the body a few bytes at a time (slow loris): once
    ``server.body_timeout_s`` has passed the server answers 408 and closes the connection,
    instead of holding the request (and the bytes so far) for as long as the client likes.
    The call never reaches the gateway."""
    config = server_config(tmp_path / "state", body_timeout_s=1.0)
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as running:
        running.tokens = tokens
        host, port = running.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /v1/tool-calls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {tokens['caller']}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            await writer.drain()
            began = time.monotonic()

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    while True:
                        await asyncio.sleep(0.2)
                        writer.write(b" ")
                        await writer.drain()

            sender = asyncio.create_task(trickle())
            try:
                answer = await asyncio.wait_for(reader.read(), 10)  # to the server's close
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            took = time.monotonic() - began
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(body)["code"] == "body_timeout"
        assert 1.0 <= took < 5.0, took
        assert not [r for r in running.audit_records() if r["event"] == "call"]


def _reference_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(item) for item in value.values()), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k'), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON)
def test_json_depth_matches_the_parsed_document(value: object) -> None:
    encoded = json.dumps(value).encode()
    assert json_depth(encoded) == _reference_depth(value)
    assert json_depth(json.dumps(value, ensure_ascii=False).encode()) == _reference_depth(value)


def test_json_depth_stays_cheap_on_hostile_megabytes() -> None:
    hostile = [
        b"[" + b"[]," * 349_000 + b"[]]",  # a million brackets, flat
        b"[" * 1_000_000,  # deep: stops at the limit
        b'"' + b'\\"' * 500_000,  # one endless string of escapes
        b'"a",' * 250_000,  # many strings
    ]
    for body in hostile:
        started = time.perf_counter()
        json_depth(body, stop_at=33)
        # ~16 ms unloaded for the worst; generous for a busy machine.
        assert time.perf_counter() - started < 0.5

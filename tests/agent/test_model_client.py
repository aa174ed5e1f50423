"""The model client against the scripted server: the real ``openai`` SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from orchestrator.agent import (
    ModelClient,
    ModelError,
    ModelReply,
    ModelTimeoutError,
    ModelToolCall,
    TokenUsage,
    UsageMeter,
    tool_message,
)
from orchestrator.agent._model_errors import retry_after_s
from orchestrator.config import ModelSettings
from orchestrator.config._env import api_key_from_env
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.testing import (
    ChatRequest,
    Failure,
    RawResponse,
    Reply,
    ScriptedModelServer,
    json_reply,
    rate_limited,
    server_error,
    slow,
    text,
    tool_call,
    tool_calls,
)

pytestmark = pytest.mark.timeout(60)

GOAL = [{"role": "user", "content": "Write a.txt, then read it back."}]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("files__write", "files__read", "python__run")
]
FAST_RETRIES = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer() as running:
        yield running


def settings(base_url: str, **fields: Any) -> ModelSettings:
    return ModelSettings(
        base_url=base_url, name="test-model", **{"timeout_s": 10, **FAST_RETRIES, **fields}
    )


def model(server: ScriptedModelServer, **fields: Any) -> ModelClient:
    return ModelClient(settings(server.base_url, **fields), environ={})


def answered(history: list[dict[str, Any]], reply: ModelReply) -> list[dict[str, Any]]:
    """The history with the reply and a tool message answering each of its calls."""
    return [
        *history,
        reply.to_message(),
        *(tool_message(call, "ok") for call in reply.tool_calls),
    ]


async def test_several_tool_calls_in_one_turn(server: ScriptedModelServer) -> None:
    server.extend(
        tool_calls(
            tool_call("files__write", {"path": "a.txt", "content": "42"}),
            tool_call("python__run", {"code": "print(open('a.txt').read())"}),
            tool_call("files__read", {"path": "a.txt"}),
            content="Three steps.",
        ),
        text("The file says 42."),
    )
    async with model(server) as client:
        first = await client.complete(GOAL, tools=TOOLS)
        assert first.content == "Three steps."
        assert [call.name for call in first.tool_calls] == [
            "files__write",
            "python__run",
            "files__read",
        ]
        assert json.loads(first.tool_calls[0].arguments) == {"path": "a.txt", "content": "42"}
        assert first.finish_reason == "tool_calls"
        assert first.attempts == 1
        # The model's ids go back in the history; the server checks every call is answered.
        second = await client.complete(answered(GOAL, first), tools=TOOLS)
    assert second.content == "The file says 42."
    assert second.tool_calls == ()
    sent = server.chat_requests
    assert sent[0].tool_names == ["files__write", "files__read", "python__run"]
    assert sent[0].model == "test-model"
    assert [m["tool_call_id"] for m in sent[1].tool_results] == [
        call.model_id for call in first.tool_calls
    ]


async def test_ids_repeating_across_responses_get_unique_ids(server: ScriptedModelServer) -> None:
    server.tool_call_ids = "per_response"
    server.extend(
        tool_calls(
            tool_call("files__write", {"path": "a"}), tool_call("files__read", {"path": "a"})
        ),
        tool_calls(tool_call("files__read", {"path": "b"}), tool_call("python__run", {"code": ""})),
        text("done"),
    )
    history = list(GOAL)
    calls: list[ModelToolCall] = []
    async with model(server) as client:
        for _ in range(2):
            reply = await client.complete(history, tools=TOOLS)
            calls.extend(reply.tool_calls)
            history = answered(history, reply)
        assert (await client.complete(history, tools=TOOLS)).content == "done"
    assert [call.model_id for call in calls] == ["call_0", "call_1", "call_0", "call_1"]
    assert len({call.id for call in calls}) == 4
    # The history keeps the model's own ids, which the server accepted.
    assert [m["tool_call_id"] for m in server.chat_requests[2].tool_results] == [
        "call_0",
        "call_1",
        "call_0",
        "call_1",
    ]


async def test_malformed_arguments_and_unknown_tools_pass_through(
    server: ScriptedModelServer,
) -> None:
    server.extend(
        tool_calls(tool_call("no_such_tool", {"x": 1}), tool_call("files__read", '{"path": "a'))
    )
    async with model(server) as client:
        reply = await client.complete(GOAL, tools=TOOLS)
    assert [(call.name, call.arguments) for call in reply.tool_calls] == [
        ("no_such_tool", '{"x": 1}'),
        ("files__read", '{"path": "a'),
    ]


async def test_json_mode(server: ScriptedModelServer) -> None:
    server.extend(json_reply({"complete": True, "reason": "all done"}))
    async with model(server) as client:
        reply = await client.complete(
            [{"role": "user", "content": "Is the goal achieved? Answer in JSON."}], json_mode=True
        )
    assert json.loads(reply.content or "") == {"complete": True, "reason": "all done"}
    assert server.chat_requests[0].body["response_format"] == {"type": "json_object"}
    assert "tools" not in server.chat_requests[0].body


async def test_streaming_gives_the_same_reply(server: ScriptedModelServer) -> None:
    turn = tool_calls(
        tool_call("files__write", {"path": "a.txt", "content": "a rather long content"}),
        tool_call("files__read", {"path": "a.txt"}),
        content="Writing the file now.",
    )
    server.extend(turn, turn)
    server.stream_piece_chars = 3
    pieces: list[str] = []
    async with model(server) as client:
        whole = await client.complete(GOAL, tools=TOOLS)
        streamed = await client.complete(GOAL, tools=TOOLS, stream=True, on_text=pieces.append)
    assert server.chat_requests[1].stream
    assert server.chat_requests[1].include_usage
    assert len(pieces) > 3
    assert "".join(pieces) == streamed.content == whole.content
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    assert streamed.finish_reason == "tool_calls"
    assert streamed.usage == whole.usage
    assert not streamed.usage.estimated


async def test_streaming_is_the_configured_default(server: ScriptedModelServer) -> None:
    server.extend(text("streamed"))
    async with model(server, stream=True) as client:
        assert (await client.complete(GOAL)).content == "streamed"
    assert server.chat_requests[0].stream


async def test_usage_per_call_and_per_run(server: ScriptedModelServer) -> None:
    server.extend(text("one"), text("two"), text("three"))
    meter = UsageMeter()
    async with model(server) as client:
        replies = [
            await client.complete(GOAL, meter=meter),
            await client.complete(GOAL, meter=meter, stream=True),
            await client.complete(GOAL, meter=meter),
        ]
    assert meter.calls == 3
    assert meter.total == replies[0].usage + replies[1].usage + replies[2].usage
    assert meter.total.total_tokens == sum(reply.usage.total_tokens for reply in replies) > 0
    assert not meter.total.estimated


async def test_usage_is_estimated_when_the_server_sends_none(server: ScriptedModelServer) -> None:
    server.usage = False
    server.extend(text("a reply of some length"), text("streamed reply"))
    async with model(server) as client:
        whole = await client.complete(GOAL)
        streamed = await client.complete(GOAL, stream=True)
    for reply in (whole, streamed):
        assert reply.usage.estimated
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert (TokenUsage() + whole.usage).estimated


@pytest.mark.parametrize("count", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_usage_counts_that_are_not_numbers_are_not_counted(
    server: ScriptedModelServer, count: str
) -> None:
    """Python's JSON reader takes NaN and Infinity; a count of either is no count."""
    body = (
        '{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],'
        f' "usage": {{"prompt_tokens": {count}, "completion_tokens": 3, "total_tokens": {count}}}}}'
    )
    server.extend(RawResponse(body=body))
    async with model(server) as client:
        reply = await client.complete(GOAL)
    assert reply.content == "hi"
    assert reply.usage == TokenUsage(prompt_tokens=0, completion_tokens=3, total_tokens=3)


async def test_429_with_retry_after_is_honoured(server: ScriptedModelServer) -> None:
    server.inject(rate_limited(retry_after_s=1))
    server.extend(text("after the wait"))
    started = time.monotonic()
    async with model(server) as client:
        reply = await client.complete(GOAL)
    assert reply.content == "after the wait"
    assert reply.attempts == 2
    first, second = server.chat_requests
    # The backoff alone would have waited at most 0.05 s.
    assert second.received_at - first.received_at >= 1.0
    assert reply.duration_s >= 1.0
    assert time.monotonic() - started < 10


async def test_500_is_retried_then_exhausted_with_a_clear_error(
    server: ScriptedModelServer,
) -> None:
    server.inject(*[server_error(message="the GPU caught fire")] * 3)
    server.extend(text("never reached"))
    async with model(server, max_attempts=3) as client:
        with pytest.raises(ModelError) as caught:
            await client.complete(GOAL)
    error = caught.value
    assert isinstance(error, InfrastructureError)
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    assert error.op == "model.complete"
    assert error.attempts == 3
    assert error.status_code == 500
    assert not error.retryable  # its retries are spent
    assert "gave up after 3 attempts" in str(error)
    assert "the GPU caught fire" in str(error)
    assert len(server.chat_requests) == 3
    assert server.remaining == 1


async def test_a_500_then_success(server: ScriptedModelServer) -> None:
    server.inject(server_error(502), server_error(503))
    server.extend(text("third time lucky"))
    async with model(server) as client:
        reply = await client.complete(GOAL)
    assert (reply.content, reply.attempts) == ("third time lucky", 3)


async def test_a_slow_reply_times_out_and_is_retried(server: ScriptedModelServer) -> None:
    server.inject(slow(text("too late"), 30))
    server.extend(text("in time"))
    started = time.monotonic()
    async with model(server, timeout_s=0.5) as client:
        reply = await client.complete(GOAL)
    assert (reply.content, reply.attempts) == ("in time", 2)
    assert 0.5 <= time.monotonic() - started < 10


async def test_timeouts_exhausted(server: ScriptedModelServer) -> None:
    server.extend(*[slow(text("late"), 30)] * 2)
    async with model(server, timeout_s=0.3, max_attempts=2) as client:
        with pytest.raises(ModelTimeoutError) as caught:
            await client.complete(GOAL)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.code is ErrorCode.TIMEOUT
    assert caught.value.attempts == 2


async def test_a_stalled_stream_times_out(server: ScriptedModelServer) -> None:
    server.extend(slow(text("late"), 30))
    async with model(server, timeout_s=0.3, max_attempts=1) as client:
        with pytest.raises(ModelTimeoutError):
            await client.complete(GOAL, stream=True)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_a_refused_request_is_not_retried(server: ScriptedModelServer, status: int) -> None:
    server.inject(Failure(status=status, message="no such model", error_type="invalid_request"))
    async with model(server) as client:
        with pytest.raises(ModelError) as caught:
            await client.complete(GOAL)
    assert caught.value.code is ErrorCode.MODEL_ERROR
    assert caught.value.status_code == status
    assert not caught.value.retryable
    assert "no such model" in str(caught.value)
    assert len(server.chat_requests) == 1


async def test_the_api_key_comes_from_the_variable_the_settings_name(
    server: ScriptedModelServer,
) -> None:
    server.api_key = "sk-from-env"
    server.extend(text("authorised"))
    config = settings(server.base_url, api_key_env="MY_MODEL_KEY")
    async with ModelClient(config, environ={"MY_MODEL_KEY": "sk-from-env"}) as client:
        assert (await client.complete(GOAL)).content == "authorised"
    async with ModelClient(config, environ={}) as client:
        with pytest.raises(ModelError, match=r"401.*\$MY_MODEL_KEY is not set") as caught:
            await client.complete(GOAL)
    assert not caught.value.retryable


def test_api_key_from_env() -> None:
    assert api_key_from_env("K", {"K": "secret"}) == "secret"
    assert api_key_from_env("K", {"K": ""}) is None
    assert api_key_from_env("K", {}) is None


def test_a_client_needs_a_server_and_a_model() -> None:
    with pytest.raises(ConfigError, match=r"model\.base_url"):
        ModelClient(ModelSettings(name="m"), environ={})
    with pytest.raises(ConfigError, match=r"model\.name"):
        ModelClient(ModelSettings(base_url="http://127.0.0.1:1/v1"), environ={})


async def test_an_unreachable_server_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: connections are refused at once.
    async with ModelClient(
        settings(f"http://127.0.0.1:{port}/v1", max_attempts=2), environ={}
    ) as client:
        with pytest.raises(ModelError) as caught:
            await client.complete(GOAL)
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert caught.value.attempts == 2


async def test_a_wait_beyond_the_total_bound_ends_the_retries_at_once(
    server: ScriptedModelServer,
) -> None:
    server.inject(rate_limited(retry_after_s=60))
    started = time.monotonic()
    async with model(server, retry_max_total_s=5) as client:
        with pytest.raises(ModelError, match="the next wait would cross the 5 s bound") as caught:
            await client.complete(GOAL)
    assert caught.value.code is ErrorCode.MODEL_RATE_LIMITED
    assert caught.value.retry_after_s == 60
    assert time.monotonic() - started < 3


async def test_the_total_bound_cuts_the_attempts_deadline(server: ScriptedModelServer) -> None:
    server.extend(*[slow(text("late"), 30)] * 5)
    started = time.monotonic()
    async with model(server, timeout_s=10, retry_max_total_s=0.6) as client:
        with pytest.raises(ModelTimeoutError):
            await client.complete(GOAL)
    assert time.monotonic() - started < 3


def chat_body(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, **extra}]}


async def test_hostile_replies_are_read_field_by_field(server: ScriptedModelServer) -> None:
    server.extend(
        # Arguments as an object (some servers), ids missing or repeated within one reply,
        # a call that is not even an object, no usage, no finish_reason, no model.
        RawResponse(
            body=chat_body(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"function": {"name": "files__read", "arguments": {"path": "a"}}},
                        {"id": "x", "function": {"name": "files__read", "arguments": "{}"}},
                        {"id": "x", "function": {"name": "python__run"}},
                        "garbage",
                    ],
                }
            )
        ),
        # The deprecated single function_call, and content as a list of parts.
        RawResponse(
            body=chat_body(
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "part one, "}, {"text": "part two"}],
                    "function_call": {"name": "files__read", "arguments": '{"path": "b"}'},
                }
            )
        ),
    )
    async with model(server) as client:
        first = await client.complete(GOAL)
        second = await client.complete(GOAL)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("files__read", '{"path": "a"}'),
        ("files__read", "{}"),
        ("python__run", ""),
        ("", "garbage"),
    ]
    model_ids = [call.model_id for call in first.tool_calls]
    assert model_ids[1] == "x"
    assert len(set(model_ids)) == 4  # the missing and the repeated were replaced
    assert all(len(i) == 9 and i.isalnum() for i in (model_ids[0], model_ids[2], model_ids[3]))
    assert first.usage.estimated
    assert first.finish_reason is None and first.model is None
    assert second.content == "part one, part two"
    assert [(c.name, c.arguments) for c in second.tool_calls] == [("files__read", '{"path": "b"}')]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ([1, 2], "not a JSON object"),
        ({"choices": []}, "no choices"),
        ({"choices": [{"index": 0}]}, "no message"),
    ],
)
async def test_replies_not_in_the_wire_format(
    server: ScriptedModelServer, body: Any, problem: str
) -> None:
    server.extend(RawResponse(body=body))
    async with model(server) as client:
        with pytest.raises(ModelError, match=problem) as caught:
            await client.complete(GOAL)
    assert caught.value.code is ErrorCode.MODEL_PROTOCOL
    assert not caught.value.retryable


def sse(*chunks: Any) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def delta(content: Any = None, calls: Any = None, finish: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {}
    if content is not None:
        piece["content"] = content
    if calls is not None:
        piece["tool_calls"] = calls
    return {"choices": [{"index": 0, "delta": piece, "finish_reason": finish}]}


async def test_streams_from_servers_that_do_it_differently(server: ScriptedModelServer) -> None:
    stream = sse(
        delta(content="Hi"),
        # No index: pieces follow their id, or the last call.
        delta(calls=[{"id": "a", "function": {"name": "files__read", "arguments": '{"pa'}}]),
        delta(calls=[{"function": {"arguments": 'th": 1}'}}]),
        # The name repeated in every chunk, arguments as an object.
        delta(calls=[{"id": "b", "function": {"name": "python__run", "arguments": {"code": ""}}}]),
        delta(calls=[{"id": "b", "function": {"name": "python__run"}}]),
        # Index 0 again with a new id (older Ollama): a new call.
        delta(calls=[{"index": 0, "id": "c", "function": {"name": "files__write"}}]),
        delta(finish="tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
    )
    server.extend(RawResponse(body=stream, content_type="text/event-stream"))
    async with model(server) as client:
        reply = await client.complete(GOAL, stream=True)
    assert reply.content == "Hi"
    assert [(c.model_id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("a", "files__read", '{"path": 1}'),
        ("b", "python__run", '{"code": ""}'),
        ("c", "files__write", ""),
    ]
    assert reply.finish_reason == "tool_calls"
    assert reply.usage == TokenUsage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


def cut_short(*chunks: Any, done: bool = True) -> RawResponse:
    """A stream without a ``finish_reason``, ended cleanly (``[DONE]``, or the body's end)."""
    body = sse(*chunks) if done else sse(*chunks).removesuffix("data: [DONE]\n\n")
    return RawResponse(body=body, content_type="text/event-stream")


@pytest.mark.parametrize("done", [True, False], ids=["done", "no-done"])
async def test_a_stream_without_a_finish_reason_is_cut_short_and_retried(
    server: ScriptedModelServer, done: bool
) -> None:
    """Half an answer is not an answer: a call's arguments may stop mid-JSON, a text
    mid-sentence. It is asked again, as after a lost connection."""
    server.extend(
        cut_short(
            delta(content="I will write"),
            delta(calls=[{"index": 0, "id": "a", "function": {"name": "files__write",
                                                              "arguments": '{"pa'}}]),
            done=done,
        ),
        text("the whole answer"),
    )  # fmt: skip
    pieces: list[str] = []
    async with model(server) as client:
        reply = await client.complete(GOAL, stream=True, on_text=pieces.append)
    assert (reply.content, reply.tool_calls, reply.attempts) == ("the whole answer", (), 2)
    assert reply.finish_reason == "stop"
    assert "".join(pieces).endswith("the whole answer")  # the text starts again


async def test_streams_cut_short_every_time_end_in_a_clear_error(
    server: ScriptedModelServer,
) -> None:
    server.extend(*[cut_short(delta(content="Hal"), delta(content="f"))] * 3)
    async with model(server, max_attempts=3) as client:
        with pytest.raises(ModelError) as caught:
            await client.complete(GOAL, stream=True)
    error = caught.value
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    assert (error.attempts, error.retryable) == (3, False)
    assert "gave up after 3 attempts" in str(error)
    assert "stream ended without a finish_reason after 2 chunk(s)" in str(error)
    assert "cut short" in str(error)
    assert len(server.chat_requests) == 3


async def test_an_empty_stream_is_a_protocol_error(server: ScriptedModelServer) -> None:
    server.extend(RawResponse(body="data: [DONE]\n\n", content_type="text/event-stream"))
    async with model(server) as client:
        with pytest.raises(ModelError, match="an empty stream") as caught:
            await client.complete(GOAL, stream=True)
    assert caught.value.code is ErrorCode.MODEL_PROTOCOL


async def test_lone_surrogates_in_a_reply_become_replacement_characters(
    server: ScriptedModelServer,
) -> None:
    """JSON's \\ud800 escape decodes to a lone surrogate, which no UTF-8 file or database
    takes: every string of the reply is made well formed as it is read."""
    server.extend(
        RawResponse(
            body={
                **chat_body(
                    {
                        "role": "assistant",
                        "content": "a\ud800b",
                        "tool_calls": [
                            {
                                "id": "i\udcff",
                                "function": {"name": "files__read\ud800", "arguments": "\udcff"},
                            }
                        ],
                    },
                    finish_reason="tool_calls\ud800",
                ),
                "model": "m\udfff",
            }
        ),
        # A pair split over two chunks is put back together; a lone half is replaced.
        RawResponse(
            body=sse(
                delta(content="\ud83d"), delta(content="\ude00 \ud83d"), delta("!", finish="stop")
            ),
            content_type="text/event-stream",
        ),
    )
    async with model(server) as client:
        whole = await client.complete(GOAL)
        streamed = await client.complete(GOAL, stream=True)
    assert whole.content == "a\ufffdb"
    assert [(c.model_id, c.name, c.arguments) for c in whole.tool_calls] == [
        ("i\ufffd", "files__read\ufffd", "\ufffd")
    ]
    assert (whole.finish_reason, whole.model) == ("tool_calls\ufffd", "m\ufffd")
    assert streamed.content == "\U0001f600 \ufffd!"
    for reply in (whole, streamed):
        reply.model_dump_json().encode()  # nothing left that UTF-8 cannot hold


async def test_the_agent_can_see_what_was_sent(server: ScriptedModelServer) -> None:
    def check(request: ChatRequest) -> Reply:
        assert request.messages[0]["content"] == GOAL[0]["content"]
        assert request.body["temperature"] == 0.0
        return text("checked")

    server.extend(check)
    async with model(server) as client:
        assert (await client.complete(GOAL)).content == "checked"


async def test_embeddings(server: ScriptedModelServer) -> None:
    server.inject(server_error(), endpoint="embeddings")
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly tax filing deadline"]
    async with model(server) as client:
        embeddings = await client.embed(texts, model="embedder")
        assert (await client.embed([])).vectors.shape == (0, 0)
    assert embeddings.attempts == 2
    assert embeddings.vectors.shape == (3, 64)
    vectors = embeddings.vectors
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embeddings.usage.prompt_tokens > 0 and not embeddings.usage.estimated
    assert server.embedding_requests[-1].body["model"] == "embedder"
    assert server.embedding_requests[-1].body["encoding_format"] == "float"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"data": []}, "0 embeddings for 1 inputs"),
        ({"data": [{"index": 0, "embedding": "not base64!"}]}, "embedding 0"),
        ({"data": [{"index": 0, "embedding": ["x"]}]}, "not a list of numbers"),
        ({"data": [{"index": 3, "embedding": [1.0]}]}, "bad index"),
    ],
)
async def test_embeddings_not_in_the_wire_format(
    server: ScriptedModelServer, body: Any, problem: str
) -> None:
    server.inject(RawResponse(body=body), endpoint="embeddings")
    async with model(server) as client:
        with pytest.raises(ModelError, match=problem):
            await client.embed(["x"])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-1"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s({"Retry-After": header}, now=now.timestamp()) == 30.0


def test_replies_serialise_for_the_run_log() -> None:
    reply = ModelReply(content="x", usage=TokenUsage(prompt_tokens=1, total_tokens=1))
    assert ModelReply.model_validate_json(reply.model_dump_json()) == reply


async def test_waits_use_the_injected_sleep(server: ScriptedModelServer) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    server.inject(rate_limited(retry_after_s=42))
    server.extend(text("ok"))
    client = ModelClient(settings(server.base_url), environ={}, sleep=record)
    async with client:
        assert (await client.complete(GOAL)).content == "ok"
    assert waits == [42]

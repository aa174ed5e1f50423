"""Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, llama.cpp).

Only ``data[].embedding`` and ``data[].index`` of the reply are read (fields
every compatible server sends); vectors are normalised here, since not every
server returns unit vectors. The SDK retries 429, 5xx, timeouts and lost
connections itself (``max_retries``, honouring ``Retry-After``); nothing
else retries around it, so attempts do not multiply. A failure that outlasts
them is an :class:`~orchestrator.errors.InfrastructureError` with a model
error code; no SDK exception escapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openai

from orchestrator.agent.memory._index import normalise_rows
from orchestrator.agent.memory._records import Vectors
from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["OpenAIEmbedder"]

_OP = "memory.embed"


class OpenAIEmbedder:
    """Embeddings from a server's ``POST /embeddings``."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        dimension: int | None = None,
        send_dimensions: bool = False,
        batch_size: int = 128,
        threshold: float = 0.3,
    ) -> None:
        """Embed with ``model`` through ``client`` (its ``base_url``, key, timeout, retries).

        ``dimension`` is the length of the server's vectors; when None it is
        learnt by :meth:`probe` (one request). ``send_dimensions`` asks the
        server for vectors of that length (OpenAI's ``text-embedding-3-*``
        can shorten them; other servers may refuse the parameter).
        ``threshold`` is the relevance cut for this model's vectors.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if send_dimensions and dimension is None:
            raise ValueError("send_dimensions needs a dimension")
        self._client = client
        self._model = model
        self._dimension = dimension
        self._send_dimensions = send_dimensions
        self._batch_size = batch_size
        self._threshold = threshold

    @property
    def name(self) -> str:
        """``openai:<model>:<dimension>``."""
        return f"openai:{self._model}:{self.dimension}"

    @property
    def dimension(self) -> int:
        """Length of the server's vectors (call :meth:`probe` first if it was not given)."""
        if self._dimension is None:
            raise RuntimeError("the embedding dimension is not known yet: await probe() first")
        return self._dimension

    @property
    def default_threshold(self) -> float:
        """The threshold given at construction."""
        return self._threshold

    async def probe(self) -> int:
        """Learn the dimension from one request, if it is not known; return it."""
        if self._dimension is None:
            self._dimension = int(
                self._request(await self._create(["dimension probe"]), 1).shape[1]
            )
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised row per text, in batches of ``batch_size`` per request."""
        dimension = await self.probe()
        rows = [np.zeros((0, dimension), dtype=np.float32)]
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            matrix = self._request(await self._create(batch), len(batch))
            if matrix.shape[1] != dimension:
                raise self._protocol(f"vectors of length {matrix.shape[1]}, expected {dimension}")
            rows.append(matrix)
        return np.concatenate(rows)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()

    async def _create(self, batch: list[str]) -> openai.types.CreateEmbeddingResponse:
        # An empty string is refused by some servers; a space embeds as "nothing".
        inputs = [text if text.strip() else " " for text in batch]
        try:
            if self._send_dimensions:
                return await self._client.embeddings.create(
                    model=self._model,
                    input=inputs,
                    encoding_format="float",
                    dimensions=self.dimension,
                )
            return await self._client.embeddings.create(
                model=self._model, input=inputs, encoding_format="float"
            )
        except openai.APITimeoutError as exc:
            raise InfrastructureError(
                f"embeddings request timed out: {exc}",
                code=ErrorCode.MODEL_UNAVAILABLE,
                op=_OP,
                retryable=True,
            ) from exc
        except openai.APIConnectionError as exc:
            raise InfrastructureError(
                f"embeddings server unreachable: {exc}",
                code=ErrorCode.MODEL_UNAVAILABLE,
                op=_OP,
                retryable=True,
            ) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            code = (
                ErrorCode.MODEL_RATE_LIMITED
                if status == 429
                else ErrorCode.MODEL_UNAVAILABLE
                if status >= 500
                else ErrorCode.MODEL_ERROR
            )
            raise InfrastructureError(
                f"embeddings server answered {status}: {exc.message}",
                code=code,
                op=_OP,
                retryable=code is not ErrorCode.MODEL_ERROR,
            ) from exc
        except openai.OpenAIError as exc:
            raise self._protocol(str(exc)) from exc

    def _request(self, response: openai.types.CreateEmbeddingResponse, count: int) -> Vectors:
        data = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in data] != list(range(count)):
            raise self._protocol(f"expected {count} embeddings indexed 0..{count - 1}")
        try:
            matrix = np.array([item.embedding for item in data], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise self._protocol(f"embeddings are not lists of numbers: {exc}") from exc
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
            raise self._protocol("embeddings are not equal-length lists of finite numbers")
        return normalise_rows(matrix)

    @staticmethod
    def _protocol(why: str) -> InfrastructureError:
        return InfrastructureError(
            f"embeddings reply not understood: {why}",
            code=ErrorCode.MODEL_PROTOCOL,
            op=_OP,
            retryable=False,
        )

"""The embedder the configuration asks for (``memory.embedder``), backends imported lazily."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from orchestrator.agent.memory._embedder import Embedder
from orchestrator.agent.memory._lexical import LexicalEmbedder
from orchestrator.config import (
    EmbedderSettings,
    LexicalEmbedderSettings,
    MiniLMEmbedderSettings,
    ModelSettings,
    OpenAIEmbedderSettings,
)
from orchestrator.config._env import api_key_from_env
from orchestrator.errors import ConfigError

__all__ = ["open_embedder"]

_log = logging.getLogger(__name__)


async def open_embedder(
    settings: EmbedderSettings,
    *,
    model: ModelSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> Embedder:
    """Build the configured embedder, off the event loop where that blocks.

    ``model`` supplies the server URL and the key's variable an ``openai``
    embedder does not name itself; ``environ`` (default: the process's)
    holds the key. A ``minilm`` embedder whose packages are not installed
    becomes the lexical one, with a warning, when its ``fallback`` is on.
    """
    if isinstance(settings, LexicalEmbedderSettings):
        return LexicalEmbedder(settings.dimension)
    if isinstance(settings, MiniLMEmbedderSettings):
        return await _minilm(settings)
    return await _openai(settings, model or ModelSettings(), environ)


async def _minilm(settings: MiniLMEmbedderSettings) -> Embedder:
    from orchestrator.agent.memory._minilm import (  # noqa: PLC0415 - loads onnxruntime
        MiniLMEmbedder,
        MiniLMUnavailableError,
    )

    try:
        return await asyncio.to_thread(lambda: MiniLMEmbedder(threads=settings.threads))
    except MiniLMUnavailableError as exc:
        if not settings.fallback:
            raise
        fallback = LexicalEmbedder()
        _log.warning(
            "memory: the MiniLM embedder is unavailable (%s); using the weaker %s instead",
            exc,
            fallback.name,
        )
        return fallback


async def _openai(
    settings: OpenAIEmbedderSettings, model: ModelSettings, environ: Mapping[str, str] | None
) -> Embedder:
    import openai  # noqa: PLC0415 - only this backend needs the SDK

    from orchestrator.agent.memory._openai import OpenAIEmbedder  # noqa: PLC0415

    base_url = settings.base_url or model.base_url
    if not base_url:
        raise ConfigError(
            "the openai embedder needs a server: set memory.embedder.base_url or model.base_url",
            field="memory.embedder.base_url",
        )
    key = api_key_from_env(settings.api_key_env or model.api_key_env, environ)
    client = openai.AsyncOpenAI(
        base_url=base_url,
        # Local servers (vLLM, Ollama, llama.cpp) need no key; the SDK needs a string.
        api_key=key or "unused",
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
    )
    embedder = OpenAIEmbedder(
        client,
        model=settings.model,
        dimension=settings.dimensions,
        send_dimensions=settings.dimensions is not None,
        threshold=settings.threshold,
    )
    try:
        await embedder.probe()
    except BaseException:
        await client.close()
        raise
    return embedder

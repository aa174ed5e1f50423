"""From the ``tracing`` section to a tracer (or to nothing, at no cost, when it is off)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.config import LoadedConfig, secret_from_env
from orchestrator.errors import ConfigError
from orchestrator.gateway import Gateway

if TYPE_CHECKING:
    from orchestrator.tracing._tracer import RunTracer

__all__ = ["gateway_type", "open_tracer"]

_EXTRA = "pip install 'stockade[tracing]'"


def _where(loaded: LoadedConfig, field: str) -> tuple[str | None, int | None]:
    """The file and line that set ``field``, when a file did."""
    origin = loaded.source_of(field)
    if loaded.file is not None and origin.startswith(str(loaded.file) + ":"):
        return str(loaded.file), int(origin.rpartition(":")[2])
    return (str(loaded.file) if loaded.file else None), None


def open_tracer(
    loaded: LoadedConfig,
    *,
    redact: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> RunTracer | None:
    """The configured tracer, or None when ``tracing.enabled`` is false (then nothing of
    OpenTelemetry is imported).

    ``redact`` (the policy's patterns) is applied to captured content. Raises
    :class:`~orchestrator.errors.ConfigError` (file, line, field) when a header's
    environment variable is not set or the ``tracing`` extra is not installed.
    """
    settings = loaded.config.tracing
    if not settings.enabled:
        return None
    headers: dict[str, str] = {}
    for name, variable in settings.headers.items():
        value = secret_from_env(variable, environ)
        if value is None:
            field = f"tracing.headers.{name}"
            file, line = _where(loaded, field)
            raise ConfigError(
                f"the environment variable {variable} (the value of header {name!r}) is not set",
                file=file,
                line=line,
                field=field,
            )
        headers[name] = value
    try:
        from orchestrator.tracing._tracer import RunTracer  # noqa: PLC0415 - the extra
    except ImportError as exc:
        file, line = _where(loaded, "tracing.enabled")
        raise ConfigError(
            f"tracing is enabled but OpenTelemetry is not installed ({exc.name}); {_EXTRA}",
            file=file,
            line=line,
            field="tracing.enabled",
        ) from exc
    return RunTracer(settings, headers=headers, redact=redact)


def gateway_type(tracer: RunTracer | None) -> Callable[..., Gateway]:
    """What builds the platform's gateway: the plain :class:`Gateway` without a tracer (no
    check on its path), else :class:`~orchestrator.tracing._gateway.TracedGateway`."""
    if tracer is None:
        return Gateway
    from orchestrator.tracing._gateway import TracedGateway  # noqa: PLC0415 - the extra

    traced: Callable[..., Any] = functools.partial(TracedGateway, tracer=tracer)
    return traced

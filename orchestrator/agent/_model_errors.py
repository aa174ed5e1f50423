"""The model client's errors, and the one mapping from the ``openai`` SDK's exceptions to them.

No ``openai`` exception leaves the client: each becomes a :class:`ModelError`
with a stable code, the operation, and whether trying again can help —
429, 408, 5xx, timeouts, lost connections and streams cut short (ended
without a ``finish_reason``) can; any other 4xx (a bad key, an unknown model,
a request the server refuses) cannot.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

import openai

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["ModelError", "ModelTimeoutError", "model_error", "retry_after_s", "truncated_stream"]

_RETRIED_STATUSES = frozenset({408, 429})
_MESSAGE_LIMIT = 500


class ModelError(InfrastructureError):
    """A request to the model server failed.

    ``status_code`` is the HTTP status when the server answered;
    ``retry_after_s`` is the wait the server asked for (``Retry-After``);
    ``attempts`` is how many attempts were made before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        op: str,
        retryable: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        self.detail = message
        super().__init__(message, code=code, op=op, retryable=retryable)


class ModelTimeoutError(ModelError, TimeoutError):
    """A request to the model server did not finish within its deadline."""

    def __init__(self, message: str, *, op: str, retryable: bool = True, attempts: int = 1) -> None:
        super().__init__(
            message, code=ErrorCode.TIMEOUT, op=op, retryable=retryable, attempts=attempts
        )


def truncated_stream(chunks: int, *, op: str) -> ModelError:
    """The error for a streamed reply that ended without a ``finish_reason``.

    Its text and calls are part of an answer at most (a call's arguments may
    stop mid-JSON), so it is never taken for the whole one. It is retried as a
    connection lost mid-stream is (the same code): the cut is the transport's,
    and asking again usually gets the whole answer.
    """
    return ModelError(
        f"the model server's stream ended without a finish_reason after {chunks} chunk(s): "
        "the answer was cut short",
        code=ErrorCode.MODEL_UNAVAILABLE,
        op=op,
        retryable=True,
    )


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds, or ``None``.

    Reads ``retry-after-ms`` (OpenAI's) before ``Retry-After``, which may be
    seconds (a decimal is tolerated) or an HTTP date. Nonsense is ignored.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(header)
        if raw is None:
            continue
        value: float | None
        try:
            value = float(raw) / scale
        except ValueError:
            value = _http_date_delay(raw, now=time.time() if now is None else now)
        if value is not None and math.isfinite(value) and value >= 0:
            return value
    return None


def _http_date_delay(raw: str, *, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _server_message(exc: openai.APIStatusError) -> str:
    # The server's own words, bounded: a proxy may answer with a whole HTML page.
    body = exc.body
    message = exc.message
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
    message = " ".join(str(message).split())
    return message[:_MESSAGE_LIMIT] + ("…" if len(message) > _MESSAGE_LIMIT else "")


def model_error(exc: BaseException, *, op: str, api_key_hint: str | None = None) -> ModelError:
    """The :class:`ModelError` for an exception raised while talking to the model server.

    ``api_key_hint`` is added to a 401's message (it names the variable the
    key should have come from, when that variable is unset).
    """
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ModelTimeoutError("the model server did not answer in time", op=op)
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            f"cannot reach the model server ({exc.message})",
            code=ErrorCode.MODEL_UNAVAILABLE,
            op=op,
            retryable=True,
        )
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, op=op, api_key_hint=api_key_hint)
    if isinstance(exc, openai.APIResponseValidationError):
        return ModelError(
            f"the model server's reply is not in the expected format ({exc.message})",
            code=ErrorCode.MODEL_PROTOCOL,
            op=op,
            retryable=False,
        )
    message = exc.message if isinstance(exc, openai.APIError) else str(exc)
    return ModelError(
        f"the model request failed: {message or type(exc).__name__}",
        code=ErrorCode.MODEL_ERROR,
        op=op,
        retryable=False,
    )


def _status_error(exc: openai.APIStatusError, *, op: str, api_key_hint: str | None) -> ModelError:
    status = exc.status_code
    message = _server_message(exc)
    wait = retry_after_s(exc.response.headers)
    if status == 429:
        return ModelError(
            f"the model server is rate limiting (429): {message}",
            code=ErrorCode.MODEL_RATE_LIMITED,
            op=op,
            retryable=True,
            status_code=status,
            retry_after_s=wait,
        )
    if status >= 500 or status in _RETRIED_STATUSES:
        return ModelError(
            f"the model server failed ({status}): {message}",
            code=ErrorCode.MODEL_UNAVAILABLE,
            op=op,
            retryable=True,
            status_code=status,
            retry_after_s=wait,
        )
    hint = f" ({api_key_hint})" if status == 401 and api_key_hint else ""
    return ModelError(
        f"the model server refused the request ({status}): {message}{hint}",
        code=ErrorCode.MODEL_ERROR,
        op=op,
        retryable=False,
        status_code=status,
    )

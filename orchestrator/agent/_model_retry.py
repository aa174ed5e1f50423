"""Retrying model requests with tenacity: only what the server or the network got wrong.

Tried again: 429, 5xx, timeouts, lost connections and streams cut short
(``_model_errors`` marks them ``retryable``); nothing else.

A wait the server names (``Retry-After``) is honoured as given; otherwise the
waits grow exponentially with full jitter. Attempts are bounded in number and,
with the waits, in total time: each attempt's deadline is cut to what is left,
and a wait that would cross the bound ends the retries at once instead of
sleeping into a failure. Giving up raises the last error, marked no longer
retryable (its retries are spent) and naming the attempts made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from orchestrator.agent._model_errors import ModelError, ModelTimeoutError, model_error

__all__ = ["RetryBounds", "with_retries"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryBounds:
    """How hard to try one request."""

    max_attempts: int
    max_total_s: float
    attempt_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float


class _ServerNamedOrBackoff(wait_base):
    """The server's ``Retry-After`` when it sent one, else exponential backoff with jitter."""

    def __init__(self, bounds: RetryBounds) -> None:
        self._backoff = wait_random_exponential(
            multiplier=bounds.backoff_initial_s, max=bounds.backoff_max_s
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, ModelError) and error.retry_after_s is not None:
            return error.retry_after_s
        return self._backoff(retry_state)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ModelError) and exc.retryable


async def with_retries(
    attempt: Callable[[float], Awaitable[T]],
    bounds: RetryBounds,
    *,
    op: str,
    api_key_hint: str | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    on_retry: Callable[[ModelError], None] | None = None,
) -> tuple[T, int]:
    """Run ``attempt(deadline_s)`` until it succeeds or the bounds are spent.

    Returns the result and the number of attempts made. Any exception of an
    attempt is mapped to a :class:`ModelError` first; ``on_retry`` gets the
    error of each attempt that is tried again, before the wait.
    """
    started = time.monotonic()
    attempts = 0

    async def one() -> T:
        nonlocal attempts
        attempts += 1
        remaining = bounds.max_total_s - (time.monotonic() - started)
        deadline = max(0.001, min(bounds.attempt_timeout_s, remaining))
        try:
            return await attempt(deadline)
        except Exception as exc:
            error = model_error(exc, op=op, api_key_hint=api_key_hint)
            error.attempts = attempts
            if error is exc:
                raise
            raise error from exc

    def give_up(state: RetryCallState) -> T:
        error = state.outcome.exception() if state.outcome else None
        assert isinstance(error, ModelError)  # one() raises nothing else
        raise _exhausted(error, attempts, time.monotonic() - started, bounds) from error

    def retrying_after(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(error, ModelError):
            on_retry(error)

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(bounds.max_attempts) | stop_before_delay(bounds.max_total_s),
        wait=_ServerNamedOrBackoff(bounds),
        retry_error_callback=give_up,
        before_sleep=retrying_after,
        sleep=sleep or asyncio.sleep,
    )
    result: T = await retrying(one)
    return result, attempts


def _exhausted(last: ModelError, attempts: int, elapsed: float, bounds: RetryBounds) -> ModelError:
    if attempts >= bounds.max_attempts:
        why = f"gave up after {attempts} attempts in {elapsed:.1f} s"
    else:
        why = (
            f"gave up after {attempts} attempt(s) in {elapsed:.1f} s: the next wait would cross "
            f"the {bounds.max_total_s:g} s bound"
        )
    message = f"{why}; last: {last.detail}"
    if isinstance(last, ModelTimeoutError):
        return ModelTimeoutError(message, op=last.op, retryable=False, attempts=attempts)
    return ModelError(
        message,
        code=last.code,
        op=last.op,
        retryable=False,
        status_code=last.status_code,
        retry_after_s=last.retry_after_s,
        attempts=attempts,
    )

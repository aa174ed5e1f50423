"""Retrying infrastructure failures with tenacity, and nothing else.

Only an :class:`~orchestrator.errors.InfrastructureError` whose ``retryable``
is set (engine hiccups, a container that did not come up) is retried: with
exponential backoff and full jitter, a bounded number of attempts and a bound
on the total time. Each attempt runs the whole call again, so each gets a
fresh container. A tool that fails is a result, not an exception, and is not
retried unless the rule asks for it; denials and rejections never are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_base,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from orchestrator.errors import InfrastructureError
from orchestrator.policy import RetrySettings

__all__ = ["run_with_retries"]

T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, InfrastructureError) and exc.retryable


def _riding_outages(
    attempt: Callable[[], Awaitable[T]],
    ready: Callable[[float], Awaitable[float | None]],
    deadline: float,
) -> Callable[[], Awaitable[T]]:
    """``attempt``, repeated while its failures coincide with the backend being away.

    Without this, an engine restart of a few seconds burns every attempt of a
    call in about a second (each fails at once) although its budget is far
    from spent.
    """

    async def riding() -> T:
        while True:
            try:
                return await attempt()
            except InfrastructureError as exc:
                remaining = deadline - time.monotonic()
                if not exc.retryable or remaining <= 0:
                    raise
                away = await ready(remaining)
                if not away:  # answered at once (a real failure), or never: spend it
                    raise

    return riding


async def run_with_retries(
    attempt: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    *,
    failed: Callable[[T], bool] = lambda _result: False,
    on_retry: Callable[[int, BaseException | None], None] = lambda _number, _error: None,
    initial_wait_s: float = 0.2,
    max_wait_s: float = 5.0,
    ready: Callable[[float], Awaitable[float | None]] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or the budget is spent.

    ``failed`` tells a result that counts as a failure (a tool error); it is
    retried only when ``settings.retry_on_tool_error`` is set. After the last
    attempt, its exception is raised or its result returned.

    ``ready`` (the sandbox backend's ``wait_ready``) rides out outages: after a
    retryable failure it waits, within the time budget, for the backend to
    answer again. An attempt that failed because the backend was away is not
    spent; one that failed while the backend answered is.
    """
    started = time.monotonic()
    if ready is not None:
        attempt = _riding_outages(attempt, ready, started + settings.max_total_s)
    # The first attempt runs bare: almost every call succeeds at once, and
    # setting up tenacity costs more than the rest of the gateway's checks.
    first_error: BaseException | None = None
    try:
        first = await attempt()
    except Exception as exc:
        if not _retryable(exc) or settings.max_attempts == 1:
            raise
        first_error = exc
    else:
        if settings.max_attempts == 1 or not (settings.retry_on_tool_error and failed(first)):
            return first
    replayed = False

    async def attempts() -> T:
        # Tenacity's first attempt is the one that already ran: replay its outcome.
        nonlocal replayed
        if replayed:
            return await attempt()
        replayed = True
        if first_error is not None:
            raise first_error
        return first

    condition: retry_base = retry_if_exception(_retryable)
    if settings.retry_on_tool_error:
        condition = condition | retry_if_result(failed)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        on_retry(state.attempt_number, error)

    retrying = AsyncRetrying(
        retry=condition,
        stop=stop_after_attempt(settings.max_attempts)
        | stop_after_delay(max(0.0, settings.max_total_s - (time.monotonic() - started))),
        wait=wait_random_exponential(multiplier=initial_wait_s, max=max_wait_s),
        before_sleep=before_sleep,
        # Out of attempts: the last attempt's own exception or result, not a RetryError.
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    result: T = await retrying(attempts)
    return result

"""Retries: only retryable infrastructure errors, bounded, each attempt a fresh container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import docker
import pytest

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.gateway._retry import run_with_retries
from orchestrator.policy import RetrySettings
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile


class Flaky:
    """Fails ``failures`` times with the given error, then answers ``result``."""

    def __init__(self, failures: int, error: Exception, result: str = "done") -> None:
        self.failures, self.error, self.result, self.calls = failures, error, result, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result


def infra(retryable: bool) -> InfrastructureError:
    return InfrastructureError(
        "hiccup", code=ErrorCode.ENGINE_ERROR, op="test", retryable=retryable
    )


class Waits(TypedDict):
    """``run_with_retries``'s waits between attempts."""

    initial_wait_s: float
    max_wait_s: float


FAST: Waits = {"initial_wait_s": 0.001, "max_wait_s": 0.002}


async def test_retryable_errors_are_retried_until_success() -> None:
    flaky = Flaky(2, infra(retryable=True))
    retries: list[int] = []
    result = await run_with_retries(
        flaky, RetrySettings(max_attempts=3), on_retry=lambda n, _e: retries.append(n), **FAST
    )
    assert result == "done" and flaky.calls == 3 and retries == [1, 2]


async def test_attempts_are_bounded_and_the_last_error_surfaces() -> None:
    flaky = Flaky(10, infra(retryable=True))
    with pytest.raises(InfrastructureError, match="hiccup"):
        await run_with_retries(flaky, RetrySettings(max_attempts=4), **FAST)
    assert flaky.calls == 4


async def test_total_time_is_bounded() -> None:
    flaky = Flaky(100, infra(retryable=True))
    with pytest.raises(InfrastructureError):
        await run_with_retries(
            flaky,
            RetrySettings(max_attempts=10, max_total_s=0.05),
            initial_wait_s=0.03,
            max_wait_s=0.03,
        )
    assert flaky.calls < 10


@pytest.mark.parametrize(
    "error", [infra(retryable=False), ValueError("a bug"), PermissionError("denied")]
)
async def test_other_errors_are_never_retried(error: Exception) -> None:
    flaky = Flaky(1, error)
    with pytest.raises(type(error)):
        await run_with_retries(flaky, RetrySettings(max_attempts=5), **FAST)
    assert flaky.calls == 1


async def test_tool_failures_are_results_unless_the_rule_says_retry() -> None:
    outcomes = iter(["error", "error", "ok"])
    calls = 0

    async def tool() -> str:
        nonlocal calls
        calls += 1
        return next(outcomes)

    result = await run_with_retries(
        tool, RetrySettings(max_attempts=5), failed=lambda r: r == "error", **FAST
    )
    assert (result, calls) == ("error", 1)
    retried = await run_with_retries(
        tool,
        RetrySettings(max_attempts=5, retry_on_tool_error=True),
        failed=lambda r: r == "error",
        **FAST,
    )
    assert (retried, calls) == ("ok", 3)


@pytest.fixture
async def backend(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None
) -> AsyncIterator[DockerBackend]:
    async with DockerBackend(docker_client, images=images, reap_on_start=False) as started:
        yield started


@pytest.mark.docker
async def test_each_retry_gets_a_fresh_container(backend: DockerBackend, tmp_path: Path) -> None:
    profile = SandboxProfile(pool_size=0)
    containers: list[str] = []
    failures = 2

    async def attempt() -> ExecResult:
        nonlocal failures
        result = await backend.execute(ExecRequest(argv=("echo", "ok")), profile)
        containers.append(result.container_id)
        if failures:
            failures -= 1
            raise infra(retryable=True)  # as if the engine had failed after the call
        return result

    result = await run_with_retries(attempt, RetrySettings(max_attempts=3), **FAST)
    assert result.status is ExecStatus.OK
    assert len(containers) == 3 and len(set(containers)) == 3, "never the same container twice"


async def test_attempts_that_failed_while_the_backend_was_away_are_not_spent() -> None:
    flaky = Flaky(6, infra(retryable=True))
    waits: list[float] = []

    async def was_away(timeout_s: float) -> float:
        waits.append(timeout_s)
        return 0.5  # it did not answer for half a second, and answers now

    settings = RetrySettings(max_attempts=2, max_total_s=30)
    assert await run_with_retries(flaky, settings, ready=was_away, **FAST) == "done"
    assert flaky.calls == 7, "six failures during the outage, none of them spent"
    assert all(0 < wait <= 30 for wait in waits)


async def test_failures_while_the_backend_answers_are_spent() -> None:
    flaky = Flaky(6, infra(retryable=True))

    async def answers(_timeout_s: float) -> float:
        return 0.0

    with pytest.raises(InfrastructureError):
        await run_with_retries(flaky, RetrySettings(max_attempts=2), ready=answers, **FAST)
    assert flaky.calls == 2


async def test_an_outage_longer_than_the_budget_ends_the_call() -> None:
    flaky = Flaky(100, infra(retryable=True))

    async def never(_timeout_s: float) -> float | None:
        return None  # still away when the budget is spent

    with pytest.raises(InfrastructureError):
        await run_with_retries(
            flaky, RetrySettings(max_attempts=3, max_total_s=1), ready=never, **FAST
        )
    assert flaky.calls == 3

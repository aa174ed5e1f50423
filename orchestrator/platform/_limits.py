"""The platform's limit store, chosen by ``limits.store``: this host's SQLite file, or Redis."""

from __future__ import annotations

from orchestrator.config import LimitsSettings, StockadeConfig
from orchestrator.config._env import api_key_from_env
from orchestrator.errors import ConfigError
from orchestrator.metrics import Metrics
from orchestrator.policy import LimitStore, RedisLimitStore, SqliteLimitStore

__all__ = ["open_limit_store", "redis_password"]


def redis_password(limits: LimitsSettings) -> str | None:
    """Redis's password, from the variable ``limits.password_env`` names (``None``: no password).

    Raises :class:`ConfigError` when that variable is not set.
    """
    if limits.password_env is None:
        return None
    password = api_key_from_env(limits.password_env)
    if password is None:
        raise ConfigError(
            f"environment variable {limits.password_env} (Redis's password) is not set",
            field="limits.password_env",
        )
    return password


def open_limit_store(settings: StockadeConfig, metrics: Metrics) -> LimitStore:
    """Open the store ``settings.limits`` names; the caller closes it.

    SQLite (the default) is shared by the processes of this host; a Redis URL
    by every orchestrator that uses the server, whose unavailability is
    counted in ``metrics`` as it fails closed or open.
    """
    limits = settings.limits
    if limits.store == "sqlite":
        return SqliteLimitStore(settings.limits_db)
    counter = metrics.limit_store_unavailable
    return RedisLimitStore(
        limits.store,
        password=redis_password(limits),
        key_prefix=limits.key_prefix,
        on_unavailable=limits.on_unavailable,
        on_unavailable_hook=lambda outcome: counter.labels(outcome).inc(),
        timeout_s=limits.timeout_s,
    )

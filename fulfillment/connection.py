"""Redis connections: which server, and one client per process and URL."""

from __future__ import annotations

import os
import threading

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry

from .settings import Settings

_clients: dict[tuple[int, str], redis.Redis] = {}
_resolved: dict[tuple[int, str | None, str], str] = {}
_lock = threading.Lock()


def resolve_redis_url(settings: Settings) -> str:
    """``FULFILLMENT_REDIS_URL``, or the embedded server (started on demand)."""
    if settings.redis_url:
        return settings.redis_url
    key = (os.getpid(), settings.redis_url, str(settings.data_dir))
    with _lock:
        if key not in _resolved:
            from .embedded import ensure_server

            _resolved[key] = ensure_server(settings.data_dir)
        return _resolved[key]


def resolve_broker_url(settings: Settings) -> str:
    """The broker: ``FULFILLMENT_BROKER_URL`` if set, else the Redis URL."""
    return settings.broker_url or resolve_redis_url(settings)


class _Retry(Retry):
    """Retry lost connections, but never a refused password: that will not heal."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):  # type: ignore[no-untyped-def]
        def retryable(error: Exception) -> bool:
            if isinstance(error, AuthenticationError | AuthorizationError):
                return False
            return is_retryable(error) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def redis_client(url: str) -> redis.Redis:
    """A client for ``url``, shared within this process (never across a fork).

    Commands are retried for about 15 s on connection errors, so a Redis restart
    pauses callers instead of failing them. Every transition script is a
    compare-and-set, so running one twice is safe.
    """
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    decode_responses=True,
                    socket_timeout=10,
                    socket_connect_timeout=2,
                    health_check_interval=30,
                    retry=_Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                )
                _clients[key] = client
    return client

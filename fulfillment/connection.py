"""Redis connections: which server, and one client per process and URL."""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .errors import ConfigError
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


def _options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": 10,
        "socket_connect_timeout": 2,
        "health_check_interval": 30,
        "retry": _Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """``sentinel://[:pw@]host:port[;sentinel://host:port...][/db]`` (Celery's form).

    Returns the sentinels, the master's password and the database number.
    """
    sentinels: list[tuple[str, int]] = []
    password: str | None = None
    db = 0
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigError(f"not a sentinel URL: {redact(part)}")
        sentinels.append((parsed.hostname, parsed.port or 26379))
        password = unquote(parsed.password) if parsed.password else password
        if parsed.path.strip("/"):
            try:
                db = int(parsed.path.strip("/"))
            except ValueError:
                raise ConfigError(f"bad database number in {redact(part)}") from None
    return sentinels, password, db


def redact(url: str) -> str:
    """``url`` with its password replaced by ``**``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1**@", url)


def redis_client(url: str, sentinel_master: str = "mymaster") -> redis.Redis:
    """A client for ``url``, shared within this process (never across a fork).

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs connect directly; a
    ``sentinel://`` URL asks the sentinels for the current master of
    ``sentinel_master`` and follows it when it fails over.

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
                if url.startswith("sentinel://"):
                    sentinels, password, db = parse_sentinel_url(url)
                    client = Sentinel(sentinels, socket_timeout=2).master_for(
                        sentinel_master, db=db, password=password, **_options()
                    )
                else:
                    client = redis.Redis.from_url(url, **_options())
                _clients[key] = client
    return client

"""Redis connections: which server, and the one client of each URL.

This is the only place a Redis client is built. redis-py's connection pools notice a
fork and open new connections in the child, so one client per URL serves every
thread and process without a cache keyed by process id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .cluster import cluster_client, is_cluster_url
from .errors import ConfigError
from .settings import EngineSettings

#: what starts a server for a deployment that names none: its data directory -> its URL
ServerStarter = Callable[[Path], str]

_starter: ServerStarter | None = None


def use_server_starter(starter: ServerStarter | None) -> None:
    """What gives a deployment without a Redis URL its server (None: nothing, it is an
    error). The engine starts no server itself: the ``fulfillment`` package installs its
    embedded valkey server (:mod:`fulfillment.ops.embedded`) here when it is imported."""
    global _starter
    _starter = starter
    _started.cache_clear()


@cache
def _started(starter: ServerStarter, data_dir: Path) -> str:
    return starter(data_dir)


def resolve_redis_url(settings: EngineSettings) -> str:
    """The deployment's Redis URL, or the URL of the server the starter gives it."""
    if settings.redis_url:
        return settings.redis_url
    if _starter is None:
        raise ConfigError(f"{settings.env_prefix()}REDIS_URL is not set")
    return _started(_starter, Path(settings.data_dir))


def resolve_broker_url(settings: EngineSettings) -> str:
    """The broker: ``FULFILLMENT_BROKER_URL`` if set, else the Redis URL."""
    return settings.broker_url or resolve_redis_url(settings)


#: error codes of a server that refuses a command for now, and will take it again:
#: out of memory (maxmemory + noeviction), a failed snapshot (stop-writes-on-bgsave-error),
#: a replica (a failover demoted it), a script running too long, a dataset loading, a
#: cluster without quorum or migrating a slot
REFUSALS = ("OOM", "MISCONF", "READONLY", "BUSY", "LOADING", "NOREPLICAS", "MASTERDOWN",
            "CLUSTERDOWN", "TRYAGAIN")  # fmt: skip


def refuses_for_now(error: BaseException) -> bool:
    """Is ``error`` a server refusing a command for now (an outage to ride out), not a
    refusal that will stand (a wrong command, a script error, a wrong password)?"""
    if isinstance(error, redis.BusyLoadingError | redis.exceptions.OutOfMemoryError):
        return True
    if isinstance(error, redis.exceptions.ReadOnlyError | redis.exceptions.ClusterDownError):
        return True
    if not isinstance(error, redis.ResponseError):
        return False
    code = getattr(error, "status_code", None)
    if not code:
        # a pipeline's error reads "Command # 1 (ZREM ...) of pipeline caused error: MISCONF ..."
        text = str(error).rsplit("caused error: ", 1)[-1]
        code = text.split(" ", 1)[0]
    return code in REFUSALS


def unavailable(error: BaseException) -> bool:
    """Is ``error`` Redis being out of reach or refusing commands for now (either heals)?"""
    if isinstance(error, AuthenticationError | AuthorizationError):
        return False
    return isinstance(error, redis.ConnectionError | redis.TimeoutError) or refuses_for_now(error)


class _Retry(Retry):
    """Retry lost connections and refusals that heal (:func:`refuses_for_now`), but never
    a refused password or a command the server will refuse again."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(error: Exception) -> bool:
            if not unavailable(error):
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
        # ResponseError: only those that heal are retried (_Retry)
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError, redis.ResponseError],
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


@cache
def redis_client(url: str, sentinel_master: str = "mymaster") -> redis.Redis:
    """The client of ``url`` (shared by every thread; a forked child gets new connections).

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs connect directly; a
    ``sentinel://`` URL asks the sentinels for the current master of
    ``sentinel_master`` and follows it when it fails over; a ``redis+cluster://`` URL
    is a Redis Cluster (:mod:`fulfillment.engine.cluster`).

    Commands are retried for about 15 s on connection errors and on refusals that heal
    (:func:`refuses_for_now`: out of memory, a failed snapshot, a demoted master, a busy
    script), so a Redis restart or a short outage pauses callers instead of failing
    them. Every transition script is a compare-and-set, so running one twice is safe;
    a refused command did not run.
    """
    if url.startswith("sentinel://"):
        sentinels, password, db = parse_sentinel_url(url)
        return Sentinel(sentinels, socket_timeout=2).master_for(
            sentinel_master, db=db, password=password, **_options()
        )
    if is_cluster_url(url):
        return cluster_client(url, _options())  # type: ignore[return-value]
    return redis.Redis.from_url(url, **_options())


def named_client(settings: EngineSettings, name: str) -> redis.Redis | None:
    """A client of its own whose connections carry ``name`` (``CLIENT SETNAME``), so that
    the server shows when the process holding them is gone; None on a cluster."""
    url = resolve_redis_url(settings)
    if is_cluster_url(url):
        return None
    if url.startswith("sentinel://"):
        sentinels, password, db = parse_sentinel_url(url)
        return Sentinel(sentinels, socket_timeout=2).master_for(
            settings.sentinel_master, db=db, password=password, client_name=name, **_options()
        )
    return redis.Redis.from_url(url, client_name=name, **_options())


def client_for(settings: EngineSettings) -> redis.Redis:
    """The client of the deployment ``settings`` describe."""
    return redis_client(resolve_redis_url(settings), settings.sentinel_master)

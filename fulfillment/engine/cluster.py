"""The run store on a Redis or Valkey Cluster: its URL, its client, and routing by slot.

``redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` for
TLS) names seed nodes; the client discovers the rest. redis-py's ``RedisCluster``
keeps the slot map, one connection pool per node, and routes plain commands by their
keys (pipelines are grouped per node). The engine's scripts do not go through its
command routing: :class:`Router` computes a script's slot from its first key, sends it
to that slot's primary on that node's own pool, follows ``MOVED`` (a slot that moved)
and ``ASK`` (a slot being migrated), reloads a script a node does not know
(``NOSCRIPT``, after a failover or a restart), and rides out a failover (connections
reset, ``CLUSTERDOWN``, ``TRYAGAIN``) with bounded retries and a growing delay.

Replication is asynchronous: a primary acknowledges a write before its replica has
it. A script whose outcome the caller is told about (a run stored, a decision taken,
a step's result recorded) is therefore followed, on the same connection and in the
same round trip, by ``WAIT <replicas> <timeout>``: it returns once a replica has that
write and everything the primary took before it. See :meth:`Router.script`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from .errors import ConfigError
from .keys import DUE_SHARDS, LAYOUT

log = logging.getLogger(__name__)

SCHEMES = ("redis+cluster", "rediss+cluster")
#: how long a call rides out a failover or a slot migration before it gives up
RIDE_OUT = 30.0

T = TypeVar("T")


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True)
class ClusterUrl:
    seeds: tuple[tuple[str, int], ...]
    password: str | None
    username: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterUrl:
    """``redis+cluster://[user:pass@]host:port[,host:port...]`` -> its parts."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SCHEMES or not rest:
        raise ConfigError(f"not a Redis Cluster URL ({'/'.join(SCHEMES)}://...)")
    credentials, _, hosts = rest.rpartition("@")
    hosts = hosts.split("/", 1)[0]
    seeds = []
    for part in hosts.split(","):
        parsed = urlsplit(f"//{part.strip()}")
        if not parsed.hostname or not parsed.port:
            raise ConfigError(f"a cluster seed must be HOST:PORT, not {part.strip()!r}")
        seeds.append((parsed.hostname, parsed.port))
    username, password = None, None
    if credentials:
        user, _, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) or None)
    return ClusterUrl(tuple(seeds), password, username, scheme.lower() == "rediss+cluster")


def cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """The client of a cluster URL: seeds given, the rest discovered."""
    parts = parse_cluster_url(url)
    options = {k: v for k, v in options.items() if k not in ("retry", "retry_on_error")}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parts.seeds],
        password=parts.password,
        username=parts.username,
        ssl=parts.tls,
        require_full_coverage=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=30),
        **options,
    )


_SHARD_SLOTS = tuple(int(key_slot(k.encode())) for k in DUE_SHARDS)

#: a node refusing for a while, or out of reach: try again after a pause
_RIDE_OUT_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
                    SlotNotCoveredError)  # fmt: skip


class Router:
    """Sends commands for a key's slot to the primary serving it, riding out moves and
    failovers."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster

    @staticmethod
    def slot(key: str) -> int:
        return int(key_slot(key.encode()))

    def node_for_slot(self, slot: int) -> redis.Redis:
        node = self.cluster.nodes_manager.get_node_from_slot(slot)
        return self.cluster.get_redis_connection(node)

    def shard_for(self, key: str) -> str:
        """The due shard of the node that serves ``key``'s slot: the first of the candidate
        shard keys (``keys.DUE_SHARDS``) whose slot that node serves too."""
        nodes = self.cluster.nodes_manager
        owner = nodes.get_node_from_slot(self.slot(key)).name
        for shard, slot in zip(DUE_SHARDS, _SHARD_SLOTS, strict=True):
            if nodes.get_node_from_slot(slot).name == owner:
                return shard
        raise SlotNotCoveredError(f"no due shard on the node serving {key!r}")

    def shards(self) -> list[str]:
        """The due shard of every primary."""
        out = []
        for node in self.cluster.get_primaries():
            for shard, slot in zip(DUE_SHARDS, _SHARD_SLOTS, strict=True):
                if self.cluster.nodes_manager.get_node_from_slot(slot).name == node.name:
                    out.append(shard)
                    break
        return out

    def primaries(self) -> list[redis.Redis]:
        """One client per primary (the fan-out of a read over the whole store)."""
        return [self.cluster.get_redis_connection(n) for n in self.cluster.get_primaries()]

    def on_slot(self, key: str, call: Callable[[redis.Redis, bool], T]) -> T:
        """``call(client, asking)`` on the primary of ``key``'s slot: ``MOVED`` is followed
        (the slot map updated), ``ASK`` answered (``call`` again on the target with
        ``asking`` True: it must send ``ASKING`` first, on the same connection), and a
        failover or a slot in flight ridden out for up to ``RIDE_OUT`` seconds."""
        slot = self.slot(key)
        delay, deadline = 0.05, time.monotonic() + RIDE_OUT
        target: redis.Redis | None = None
        while True:
            try:
                if target is not None:
                    asked, target = target, None
                    return call(asked, True)
                return call(self.node_for_slot(slot), False)
            except MovedError as exc:
                self.cluster.nodes_manager.move_slot(exc)
            except AskError as exc:
                target = self.cluster.get_redis_connection(ClusterNode(exc.host, exc.port))
            except _RIDE_OUT_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise
                log.debug("cluster call for slot %d: %r; trying again", slot, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                self._refresh()

    def _refresh(self) -> None:
        try:
            self.cluster.nodes_manager.initialize()
        except redis.RedisError as exc:
            log.debug("could not refresh the cluster's slot map: %r", exc)

    def script(
        self,
        sha: str,
        source: str,
        keys: list[str],
        argv: list[Any],
        wait: tuple[int, int] | None = None,
    ) -> Any:
        """EVALSHA on the primary of the slot of ``keys`` (the script loaded there first if
        it does not know it). ``wait``: (replicas, timeout ms): the reply comes once that
        many replicas have the write (``WAIT``, same connection, same round trip)."""

        def run(client: redis.Redis, asking: bool) -> Any:
            for _ in range(2):
                pipe = client.pipeline(transaction=False)
                if asking:
                    pipe.execute_command("ASKING")
                pipe.evalsha(sha, len(keys), *keys, *argv)
                if wait is not None:
                    pipe.execute_command("WAIT", *wait)
                try:
                    replies = pipe.execute()[1:] if asking else pipe.execute()
                except NoScriptError:
                    client.script_load(source)
                    continue
                if wait is not None and int(replies[1]) < wait[0]:
                    log.warning("a write to slot %d reached %s of %d replica(s) within %d ms",
                                self.slot(keys[0]), replies[1], wait[0], wait[1])  # fmt: skip
                return replies[0]
            raise NoScriptError(f"script {sha} could not be loaded")

        return self.on_slot(keys[0], run)


def fixed_buckets(client: redis.Redis, wanted: int) -> int:
    """The store's bucket count: recorded at its first use, refused if asked to change.

    Like Temporal's number of history shards, it cannot change once runs are spread
    over the buckets: a run's keys are where its bucket is.
    """
    client.hsetnx(LAYOUT, "buckets", wanted)
    recorded = int(client.hget(LAYOUT, "buckets") or wanted)
    if recorded != wanted:
        raise ConfigError(
            f"FULFILLMENT_CLUSTER_BUCKETS={wanted}, but this store was made with {recorded} "
            "buckets, which cannot change (set it back to "
            f"{recorded})"
        )
    return recorded


def bucket_count(settings: Any, client: redis.Redis) -> int:
    """The deployment's bucket count: 1 on one server, the store's own on a cluster."""
    if not is_cluster_url(settings.redis_url):
        return 1
    return fixed_buckets(client, settings.cluster_buckets)


__all__ = [
    "Router",
    "bucket_count",
    "cluster_client",
    "fixed_buckets",
    "is_cluster_url",
    "parse_cluster_url",
]

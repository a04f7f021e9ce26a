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
from .keys import SharedKeys

log = logging.getLogger(__name__)

SCHEMES = ("redis+cluster", "rediss+cluster")
#: how long a call rides out a failover or a slot migration before it gives up
RIDE_OUT = 30.0
#: a script's error when it touched a key of a slot its node does not serve
NON_LOCAL = "non local key"
#: how long a primary found with no replica online writes without waiting for one
ALONE_FOR = 5.0

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


class RidingCluster(RedisCluster):
    """redis-py's cluster client, whose commands ride out a failover.

    redis-py retries a command that meets a reset connection or ``CLUSTERDOWN`` a few
    times at once; a replica takes a few seconds to be promoted. Here a command keeps
    trying, with a growing pause and a fresh slot map, for up to ``RIDE_OUT`` seconds.
    Pipelines are not covered: :meth:`Router.ride_out` runs one again whole.
    """

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return ride_out(lambda: RedisCluster.execute_command(self, *args, **kwargs), self)


def ride_out(call: Callable[[], T], cluster: RedisCluster, what: str = "cluster call") -> T:
    """``call()``, again after a pause (up to ``RIDE_OUT`` seconds) while the cluster is in
    a failover: connections refused or reset, ``CLUSTERDOWN``, ``TRYAGAIN``, a slot not
    covered yet."""
    delay, deadline = 0.05, time.monotonic() + RIDE_OUT
    while True:
        try:
            return call()
        except _RIDE_OUT_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise
            log.debug("%s: %r; trying again", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            _refresh(cluster)


def _refresh(cluster: RedisCluster) -> None:
    try:
        cluster.nodes_manager.initialize()
    except redis.RedisError as exc:
        log.debug("could not refresh the cluster's slot map: %r", exc)


def cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """The client of a cluster URL: seeds given, the rest discovered."""
    parts = parse_cluster_url(url)
    options = {k: v for k, v in options.items() if k not in ("retry", "retry_on_error")}
    return RidingCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parts.seeds],
        password=parts.password,
        username=parts.username,
        ssl=parts.tls,
        require_full_coverage=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=30),
        **options,
    )


#: a node refusing for a while, or out of reach: try again after a pause
_RIDE_OUT_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
                    SlotNotCoveredError)  # fmt: skip


class NotReplicated(redis.RedisError):
    """A write the caller would be told about reached no replica in time (see
    :meth:`Router.script`); the primary has it, a failover could lose it."""


class Router:
    """Sends commands for a key's slot to the primary serving it, riding out moves and
    failovers."""

    def __init__(self, cluster: RedisCluster, keys: SharedKeys | None = None) -> None:
        self.cluster = cluster
        #: the candidate due shards, and the slot of each
        self._shards = (keys or SharedKeys()).due_shards
        self._shard_slots = tuple(int(key_slot(k.encode())) for k in self._shards)
        #: primary -> until when it is known to have no replica to wait for
        self._alone_until: dict[str, float] = {}

    @staticmethod
    def _name(client: redis.Redis) -> str:
        kwargs = client.connection_pool.connection_kwargs
        return f"{kwargs.get('host')}:{kwargs.get('port')}"

    def _has_replicas(self, client: redis.Redis) -> bool:
        return self._alone_until.get(self._name(client), 0.0) <= time.monotonic()

    def _online_replicas(self, client: redis.Redis) -> int:
        try:
            info = client.info("replication")
        except redis.RedisError:
            return 0
        return sum(
            1 for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )  # fmt: skip

    def _until_replicated(self, client: redis.Redis, conn: Any, wait: tuple[int, int]) -> None:
        """A write reached fewer replicas than asked within ``WAIT``'s timeout.

        A primary with no replica online (its replica was promoted elsewhere, died, or is
        not attached yet) has none to wait for: it writes without ``WAIT`` for
        ``ALONE_FOR`` seconds, then is asked again. A replica that is online but slow is
        waited for again (on the connection that wrote: ``WAIT`` counts that
        connection's writes), up to ``RIDE_OUT`` seconds; then the call fails with
        :class:`NotReplicated` rather than acknowledge a write a failover could lose.
        """
        name = self._name(client)
        deadline = time.monotonic() + RIDE_OUT
        while True:
            if self._online_replicas(client) == 0:
                self._alone_until[name] = time.monotonic() + ALONE_FOR
                log.warning("the primary %s has no replica online: its writes are not "
                            "replicated (looking again in %.0f s)", name, ALONE_FOR)  # fmt: skip
                return
            if time.monotonic() >= deadline:
                raise NotReplicated(
                    f"no replica of the primary {name} took the write within {RIDE_OUT:.0f} s "
                    "(the primary has it; a failover now could lose it)"
                )
            log.warning("a write to the primary %s is not on a replica after %d ms; waiting",
                        name, wait[1])  # fmt: skip
            if int(_exchange(client, conn, [("WAIT", *wait)])[0]) >= wait[0]:
                return

    @staticmethod
    def slot(key: str) -> int:
        return int(key_slot(key.encode()))

    def node_for_slot(self, slot: int) -> redis.Redis:
        node = self.cluster.nodes_manager.get_node_from_slot(slot)
        return self.cluster.get_redis_connection(node)

    def shard_for(self, key: str) -> str:
        """The due shard of the node that serves ``key``'s slot: the first of the candidate
        shard keys (:attr:`SharedKeys.due_shards`) whose slot that node serves too."""
        nodes = self.cluster.nodes_manager
        owner = nodes.get_node_from_slot(self.slot(key)).name
        for shard, slot in zip(self._shards, self._shard_slots, strict=True):
            if nodes.get_node_from_slot(slot).name == owner:
                return shard
        raise SlotNotCoveredError(f"no due shard on the node serving {key!r}")

    def shards(self) -> list[str]:
        """The due shard of every primary."""
        out = []
        for node in self.cluster.get_primaries():
            for shard, slot in zip(self._shards, self._shard_slots, strict=True):
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
                _refresh(self.cluster)

    def refresh(self) -> None:
        """Read the slot map again (a slot moved)."""
        _refresh(self.cluster)

    def ride_out(self, call: Callable[[], T], what: str = "cluster call") -> T:
        """``call()`` (a pipeline over several nodes, say), run again whole while the
        cluster is in a failover (see :func:`ride_out`)."""
        return ride_out(call, self.cluster, what)

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
            waiting = wait if wait is not None and self._has_replicas(client) else None
            commands: list[tuple[Any, ...]] = [("ASKING",)] if asking else []
            commands.append(("EVALSHA", sha, len(keys), *keys, *argv))
            if waiting is not None:
                commands.append(("WAIT", *waiting))
            pool = client.connection_pool
            conn = pool.get_connection()
            try:
                for _ in range(2):
                    replies = _exchange(client, conn, commands)[1 if asking else 0 :]
                    if isinstance(replies[0], NoScriptError):
                        client.script_load(source)
                        continue
                    if isinstance(replies[0], Exception):
                        raise replies[0]
                    if waiting is not None and int(replies[1]) < waiting[0]:
                        self._until_replicated(client, conn, waiting)
                    return replies[0]
                raise NoScriptError(f"script {sha} could not be loaded")
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                raise
            finally:
                pool.release(conn)

        return self.on_slot(keys[0], run)


def _exchange(client: redis.Redis, conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` on one connection in one round trip; a command's error is its reply."""
    conn.send_packed_command(conn.pack_commands(commands))
    replies: list[Any] = []
    for command in commands:
        try:
            replies.append(client.parse_response(conn, command[0]))
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def fixed_buckets(
    client: redis.Redis, wanted: int, keys: SharedKeys | None = None,
    setting: str = "FULFILLMENT_CLUSTER_BUCKETS",
) -> int:  # fmt: skip
    """The store's bucket count: recorded at its first use, refused if asked to change.

    Like Temporal's number of history shards, it cannot change once runs are spread
    over the buckets: a run's keys are where its bucket is.
    """
    layout = (keys or SharedKeys()).layout
    client.hsetnx(layout, "buckets", wanted)
    recorded = int(client.hget(layout, "buckets") or wanted)
    if recorded != wanted:
        raise ConfigError(
            f"{setting}={wanted}, but this store was made with {recorded} buckets, which "
            f"cannot change (set it back to {recorded})"
        )
    return recorded


def bucket_count(settings: Any, client: redis.Redis) -> int:
    """The deployment's bucket count: 1 on one server, the store's own on a cluster.

    A plain URL at a node of a cluster is refused here, with the URL to use instead."""
    prefix = settings.env_prefix()
    if not is_cluster_url(settings.redis_url):
        try:
            enabled = str(client.info("cluster").get("cluster_enabled", 0)) == "1"
        except redis.RedisError:
            enabled = False  # not reachable yet: the first real call says so
        if enabled:
            raise ConfigError(
                f"{prefix}REDIS_URL names a node of a Redis Cluster: use "
                f"redis+cluster://HOST:PORT[,HOST:PORT...] (and an amqp:// {prefix}BROKER_URL)"
            )
        return 1
    keys = SharedKeys(settings.key_namespace)
    return fixed_buckets(client, settings.cluster_buckets, keys, f"{prefix}CLUSTER_BUCKETS")


__all__ = [
    "NotReplicated",
    "Router",
    "bucket_count",
    "cluster_client",
    "fixed_buckets",
    "is_cluster_url",
    "parse_cluster_url",
]

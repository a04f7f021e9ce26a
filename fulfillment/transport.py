"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis ``Channel`` builds a new ``redis.Redis`` object for every publish,
every delivered message (the unacked bookkeeping), every ack and every event it
sends (``Channel.conn_or_acquire`` -> ``_create_client``). The connection is
reused from the pool, but the object is not, and building one fills redis-py's
response-callback table each time: in the profile of a worker that was about a
tenth of its CPU (``bench/RESULTS.md``). A redis-py client is thread-safe and
holds nothing but its pool, so these transports build it once per channel and
pool, and otherwise change nothing. The blocking ``BRPOP`` client and the
pub/sub client stay as kombu makes them.

``celeryconfig.build`` selects them by the broker URL's scheme
(:func:`transport_for`); any other scheme keeps kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

_TRANSPORTS = {
    "redis": "fulfillment.transport:Transport",
    "rediss": "fulfillment.transport:Transport",
    "sentinel": "fulfillment.transport:SentinelTransport",
}


class _OneClientPerPool:
    """Mixin for kombu's Redis channels: reuse the synchronous client."""

    _reused_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        client = self._reused_client
        if client is None or client.connection_pool is not pool:
            # first use, or kombu replaced the pool (e.g. after a reconnect)
            client = self._reused_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(_OneClientPerPool, kombu_redis.Channel):
    """kombu's Redis channel with its synchronous client reused."""


class SentinelChannel(_OneClientPerPool, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel with its synchronous client reused."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``) using :class:`Channel`."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://``) using :class:`SentinelChannel`."""

    Channel = SentinelChannel


def transport_for(url: str) -> str | None:
    """The transport class for a broker URL, or None for kombu's choice by scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return _TRANSPORTS.get(scheme)

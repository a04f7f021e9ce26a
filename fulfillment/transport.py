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

They also let a caller hold back the messages it publishes (:func:`outbox`):
inside the block, the final ``LPUSH`` of each message is collected instead of
sent, so that a Lua transition script can push it in the same atomic step that
moves the order on (the transactional outbox, see ``lua/lib.lua``). Celery and
kombu still build every message, run the publish signals and route it; only the
last command changes hands.

``celeryconfig.build`` selects them by the broker URL's scheme
(:func:`transport_for`); any other scheme keeps kombu's own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

#: (list key, serialized message) of each message held back, in publish order
Outbox = list[tuple[str, str]]

_holding: ContextVar[Outbox | None] = ContextVar("fulfillment_outbox", default=None)

_TRANSPORTS = {
    "redis": "fulfillment.transport:Transport",
    "rediss": "fulfillment.transport:Transport",
    "sentinel": "fulfillment.transport:SentinelTransport",
}


class _ReusedClientAndOutbox:
    """Mixin for kombu's Redis channels: reuse the synchronous client; honour :func:`outbox`."""

    _reused_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._reused_client
        if self.connection.client is None:  # type: ignore[attr-defined]
            # kombu detached this channel's transport from its Connection (the
            # connection was lost and is being collected) before closing the
            # channel, whose close restores unacknowledged messages. kombu would
            # build a new pool from the Connection's parameters here and fail
            # with AttributeError, which kills the worker ("Unrecoverable error").
            # Use the client this channel already has; without one, fail as a
            # lost connection does, which kombu and Celery recover from.
            if client is None:
                raise redis.ConnectionError("channel closed: its connection was lost")
            return client
        pool = self.pool  # type: ignore[attr-defined]
        if client is None or getattr(client, "connection_pool", None) is not pool:
            # first use, or kombu replaced the pool (e.g. after a reconnect)
            client = self._reused_client = super()._create_client()  # type: ignore[misc]
        return client

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        held = _holding.get()
        expires = self._expires  # type: ignore[attr-defined]
        if held is None or kwargs.get("_publish_batch") is not None or queue in expires:
            return super()._put(queue, message, **kwargs)  # type: ignore[misc]
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[attr-defined]
        held.append((self._q_for_pri(queue, priority), dumps(message)))  # type: ignore[attr-defined]
        return None


class Channel(_ReusedClientAndOutbox, kombu_redis.Channel):
    """kombu's Redis channel with its synchronous client reused."""


class SentinelChannel(_ReusedClientAndOutbox, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel with its synchronous client reused."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``) using :class:`Channel`."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://``) using :class:`SentinelChannel`."""

    Channel = SentinelChannel


@contextmanager
def outbox() -> Iterator[Outbox]:
    """Collect, instead of sending, the queue pushes of messages published in the block.

    Only messages going through these transports are held; the caller must hand
    the collected pushes to a script running on the broker's own Redis database,
    or they are never sent.
    """
    held: Outbox = []
    token = _holding.set(held)
    try:
        yield held
    finally:
        _holding.reset(token)


def transport_for(url: str) -> str | None:
    """The transport class for a broker URL, or None for kombu's choice by scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return _TRANSPORTS.get(scheme)

"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis ``Channel`` builds a new ``redis.Redis`` object for every publish, every
delivered message, every ack and every event it sends (``Channel.conn_or_acquire`` ->
``_create_client``). The connection is reused from the pool, but the object is not, and
building one fills redis-py's response-callback table each time: in the profile of a
worker that was about a tenth of its CPU (``bench/RESULTS.md``). A redis-py client is
thread-safe and holds nothing but its pool, so these transports build it once per
channel and pool, and otherwise change nothing. The blocking ``BRPOP`` client and the
pub/sub client stay as kombu makes them. kombu's own Redis transport test suites run
against these classes in CI (``tests/test_kombu_suite.py``).

They also let a caller hold back the messages it publishes (:func:`outbox`):
inside the block, the final ``LPUSH`` of each message is collected instead of
sent, so that a Lua transition script can push it in the same atomic step that
moves the order on (the transactional outbox, see ``lua/lib.lua``). Celery and
kombu still build every message, run the publish signals and route it; only the
last command changes hands. Everything kombu's ``_put`` would do is held: the
``global_keyprefix`` of the key, and the ``x-expires`` of the queue. What cannot
be held (a publish batch) raises :class:`OutboxError` instead of slipping out
at once; a fanout message (an event) is held as a ``PUBLISH``.

They also refuse a payload kombu's consumer loop would die of (not JSON, empty, a JSON
array, a body that is not base64, no delivery tag: see
:func:`~fulfillment.engine.intake.envelope_problem`): it is handed to the refusal
handler (:func:`on_refused`; the engine's worker keeps it as a dead letter) and
dropped, instead of raising out of the event loop and killing the worker, whose
restart would pop the next such message in turn.

And they ride out a Redis that refuses writes for a while (out of memory, a failed
snapshot, a demoted master, a busy script:
:func:`~fulfillment.engine.connection.refuses_for_now`): kombu's Redis consumer
treats a refused ``BRPOP`` as unrecoverable and the worker exits; here it waits and
polls again, and one WARNING line says so. (The engine runs them without kombu's
acknowledgement emulation, ``config.py``: a delivered message leaves no bookkeeping in
Redis to refuse.)

``celeryconfig.build`` selects them by the broker URL's scheme
(:func:`transport_for`); any other scheme keeps kombu's own transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from .connection import refuses_for_now
from .intake import envelope_problem

log = logging.getLogger(__name__)

#: what to do with a payload the channels refuse: (reason, raw payload, queue)
RefusalHandler = Callable[[str, "bytes | str", str], None]


def _log_refusal(reason: str, raw: bytes | str, queue: str) -> None:
    log.warning("refused a payload from queue %s: %s", queue, reason)


_on_refused: RefusalHandler = _log_refusal


def on_refused(handler: RefusalHandler | None) -> None:
    """Set what the Redis channels do with a payload they refuse (None: log it only)."""
    global _on_refused
    _on_refused = handler or _log_refusal


@dataclass(frozen=True, slots=True)
class HeldPush:
    """One message held back: the list it goes to, and what kombu would expire with it.

    A fanout message (Celery's events, e.g. ``task-sent``) is held as a ``PUBLISH``
    to the pub/sub channel ``key`` instead: it goes out only if the message it
    announces does.
    """

    key: str
    message: str
    #: the queue's lists to ``PEXPIRE`` after the push (a queue declared with x-expires)
    expire_keys: tuple[str, ...] = ()
    expire_ms: int = 0
    publish: bool = False


#: the pushes held back, in publish order
Outbox = list[HeldPush]


class OutboxError(RuntimeError):
    """A message was published inside :func:`outbox` that cannot be held back."""


_holding: ContextVar[Outbox | None] = ContextVar("fulfillment_outbox", default=None)

_TRANSPORTS = {
    "redis": "fulfillment.engine.transport:Transport",
    "rediss": "fulfillment.engine.transport:Transport",
    "sentinel": "fulfillment.engine.transport:SentinelTransport",
}


class _ReusedClientAndOutbox:
    """Mixin for kombu's Redis channels: reuse the synchronous client; honour :func:`outbox`;
    refuse payloads that would kill the worker; ride out refused writes."""

    _reused_client: Any = None
    _refused_since: float | None = None
    _refused_delay = 0.05
    _in_poll: Any

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._reused_client
        try:
            pool = self.pool  # type: ignore[attr-defined]
        except AttributeError:
            # kombu detached this channel's transport from its Connection (the
            # connection was lost and is being collected) before closing the
            # channel, whose close restores unacknowledged messages; building a
            # new pool from the Connection's parameters then fails, and the
            # AttributeError kills the worker ("Unrecoverable error"). Use the
            # client this channel already has; without one, fail as a lost
            # connection does, which kombu and Celery recover from.
            if self.connection.client is not None:  # type: ignore[attr-defined]
                raise
            if client is None:
                raise redis.ConnectionError("channel closed: its connection was lost") from None
            return client
        if client is None or client.connection_pool is not pool:
            # first use, or kombu replaced the pool (e.g. after a reconnect)
            client = super()._create_client()  # type: ignore[misc]
            if not isinstance(client, redis.Redis):
                return client  # only a redis-py client is known to be safe to share
            self._reused_client = client
        return client

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's read of a ``BRPOP`` reply, with the payload checked before delivery."""
        client = self.client  # type: ignore[attr-defined]
        try:
            try:
                reply = client.parse_response(client.connection, "BRPOP", **options)
            except self.connection_errors:  # type: ignore[attr-defined]
                client.connection.disconnect()  # the next poll reconnects
                raise
            except redis.ResponseError as exc:
                if not refuses_for_now(exc):
                    raise
                self._wait_while_refused(exc)
                raise Empty() from None
            if self._refused_since is not None:
                log.warning("Redis takes BRPOP again after %.1fs",
                            time.monotonic() - self._refused_since)  # fmt: skip
                self._refused_since, self._refused_delay = None, 0.05
            if not reply:
                raise Empty()
            dest, item = reply
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]  # type: ignore[attr-defined]
            self._queue_cycle.rotate(queue)  # type: ignore[attr-defined]
            payload, problem = envelope_problem(item)
            if problem is not None:
                try:
                    _on_refused(problem, item, queue)
                except Exception:  # the refusal itself must not stop the worker
                    log.warning("refused a payload from queue %s: %s", queue, problem)
                return True
            self.connection._deliver(payload, queue)  # type: ignore[attr-defined]
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # type: ignore[attr-defined]

    def maybe_refresh_binding_expiry(self) -> None:
        """kombu's refresh of expiring queues' bindings, which logs a traceback for every
        refusal; a refusal that heals is one line instead, and the next refresh tries again."""
        try:
            super().maybe_refresh_binding_expiry()  # type: ignore[misc]
        except redis.ResponseError as exc:
            if not refuses_for_now(exc):
                raise
            if self._refused_since is None:
                log.warning("Redis refuses the bindings' refresh for now (%s)", exc)

    def _wait_while_refused(self, exc: Exception) -> None:
        """BRPOP was refused (nothing was popped): wait a little longer each time, then poll
        again. The wait blocks this worker's event loop, which has nothing to do meanwhile
        (every write to Redis is refused too)."""
        if self._refused_since is None:
            self._refused_since = time.monotonic()
            log.warning("Redis refuses BRPOP for now (%s); polling again", exc)
        time.sleep(self._refused_delay)
        self._refused_delay = min(self._refused_delay * 2, 1.0)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        held = _holding.get()
        if held is None:
            return super()._put(queue, message, **kwargs)  # type: ignore[misc]
        if kwargs.get("_publish_batch") is not None:
            raise OutboxError("the outbox cannot hold a batch publish")
        prefix = self.global_keyprefix  # type: ignore[attr-defined]
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[attr-defined]
        key = prefix + self._q_for_pri(queue, priority)  # type: ignore[attr-defined]
        expires = self._expires.get(queue) if self._expires else None  # type: ignore[attr-defined]
        if expires is None:
            held.append(HeldPush(key, dumps(message)))
            return None
        steps = self.priority_steps  # type: ignore[attr-defined]
        lists = tuple(prefix + self._q_for_pri(queue, p) for p in steps)  # type: ignore[attr-defined]
        held.append(HeldPush(key, dumps(message), lists, int(expires)))
        return None

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kw: Any
    ) -> None:
        held = _holding.get()
        if held is None:
            return super()._put_fanout(exchange, message, routing_key, **kw)  # type: ignore[misc]
        if kw.get("_publish_batch") is not None:
            raise OutboxError("the outbox cannot hold a batch publish")
        self.pool  # type: ignore[attr-defined]  # noqa: B018 - kombu fills in the db of the topic here
        prefix = self.global_keyprefix  # type: ignore[attr-defined]
        payload = dumps(message)
        for topic in self._get_publish_topics(exchange, routing_key):  # type: ignore[attr-defined]
            held.append(HeldPush(prefix + topic, payload, publish=True))
        return None


class Channel(_ReusedClientAndOutbox, kombu_redis.Channel):
    """kombu's Redis channel with its synchronous client reused."""


class SentinelChannel(kombu_redis.SentinelChannel, Channel):
    """kombu's Sentinel channel with its synchronous client reused (and a :class:`Channel`).

    kombu's Sentinel channel overrides neither ``_create_client`` nor ``_put`` /
    ``_put_fanout``, so the mixin's still apply after it in the method order.
    """


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

"""pytest plugin for kombu's own test suites: its Redis transport classes become ours.

Loaded with ``-p tests.kombu_substitute`` before kombu's test modules are
imported, so ``from kombu.transport.redis import Channel, Transport`` in them,
``redis.Channel`` in their fixtures and ``Connection('redis://...')`` all get
:mod:`fulfillment.engine.transport`'s subclasses.
"""

from __future__ import annotations

import kombu.transport.redis as kombu_redis
from kombu.utils import eventio

from fulfillment.engine import transport as ours

# kombu's unit tests patch ``eventio.poll`` and then import kombu.transport.redis,
# which binds ``poll`` at import. This plugin imported it first (through
# fulfillment.transport), so look the name up at call time: the patch still applies.
kombu_redis.poll = lambda *args, **kwargs: eventio.poll(*args, **kwargs)  # type: ignore[assignment]

kombu_redis.Channel = ours.Channel  # type: ignore[misc]
kombu_redis.SentinelChannel = ours.SentinelChannel  # type: ignore[misc]
kombu_redis.Transport = ours.Transport  # type: ignore[misc]
kombu_redis.SentinelTransport = ours.SentinelTransport  # type: ignore[misc]


def pytest_configure(config: object) -> None:
    # -q hides report headers: say it where the caller reads it
    print(f"kombu's Redis transport substituted: {kombu_redis.Transport.__module__}.Transport")

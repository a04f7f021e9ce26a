"""Per-process runtime: settings, the Redis client, the order store and the services.

Built lazily and keyed by process id, so a forked pool process never reuses its
parent's connections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from .connection import redis_client, resolve_redis_url
from .scripts import Scripts
from .services import Services
from .settings import Settings, get_settings
from .store import OrderStore


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def url(self) -> str:
        return resolve_redis_url(self.settings)

    @cached_property
    def client(self):  # type: ignore[no-untyped-def]
        return redis_client(self.url, self.settings.sentinel_master)

    @cached_property
    def store(self) -> OrderStore:
        return OrderStore(self.client, self.settings)

    @cached_property
    def holds_messages(self) -> bool:
        """Do step tasks hand the next step's message to ``complete.lua`` (the outbox)?"""
        from . import workflow
        from .celery_app import app

        return workflow.holds_messages(app, self.url)

    @cached_property
    def services(self) -> Services:
        return Services(self.client, Scripts(self.client), self.settings)


_runtimes: dict[int, Runtime] = {}


def runtime() -> Runtime:
    """The runtime of this process, from the environment's settings."""
    pid = os.getpid()
    current = _runtimes.get(pid)
    if current is None:
        current = _runtimes[pid] = Runtime(get_settings())
    return current

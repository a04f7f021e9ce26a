"""Fault injection: make a simulated service fail its first N attempts.

Faults live in Redis, so setting one from the CLI affects every worker at once.
A fault applies to attempts ``1..attempts`` of a step (``attempts=None``: every
attempt, until cleared), either for every order or for one order only.

On a Redis Cluster a copy of the faults is kept in every bucket's slot (the services'
scripts touch one slot: the order's), written with the faults themselves: setting or
clearing one writes each copy, one pipeline per master.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import redis
from redis.cluster import RedisCluster

from ...engine.cluster import fixed_buckets
from ...engine.keys import KeySpace, SharedKeys
from ..keys import FAULTS, faults_copy
from ..settings import get_settings

SERVICES = ("payment", "inventory", "delivery")
Mode = Literal["raise", "hang"]


def _field(service: str, order_id: str | None) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; services are {', '.join(SERVICES)}")
    return f"{service}:{order_id}" if order_id else service


def set_fault(
    client: redis.Redis,
    service: str = "inventory",
    *,
    attempts: int | None = 3,
    mode: Mode = "raise",
    order_id: str | None = None,
) -> None:
    """Take ``service`` down for attempts 1..``attempts`` (None: until cleared).

    ``mode="raise"`` fails the call at once; ``mode="hang"`` never answers, so the
    attempt overruns its time limit.
    """
    if mode not in ("raise", "hang"):
        raise ValueError(f"unknown fault mode {mode!r}; modes are raise, hang")
    if attempts is not None and attempts < 0:
        raise ValueError("attempts must be >= 0 (or None for every attempt)")
    spec = json.dumps({"mode": mode, "attempts": -1 if attempts is None else attempts})
    field = _field(service, order_id)
    client.hset(FAULTS, field, spec)
    _on_copies(client, lambda pipe, key: pipe.hset(key, field, spec))


def clear_faults(
    client: redis.Redis, service: str | None = None, order_id: str | None = None
) -> int:
    """Remove faults: all of them, or those of one service (and order). Returns how many."""
    if service is None:
        _on_copies(client, lambda pipe, key: pipe.delete(key))
        return int(client.delete(FAULTS))
    field = _field(service, order_id)
    _on_copies(client, lambda pipe, key: pipe.hdel(key, field))
    return int(client.hdel(FAULTS, field))


def _on_copies(client: redis.Redis, change: Callable[[Any, str], Any]) -> None:
    """``change(pipe, key)`` on every bucket's copy of the faults (a cluster's)."""
    if not isinstance(client, RedisCluster):
        return
    settings = get_settings()
    keys = SharedKeys(settings.key_namespace)
    space = KeySpace(FAULTS, "", buckets=fixed_buckets(client, settings.cluster_buckets, keys))
    pipe = client.pipeline(transaction=False)
    for bucket in space.all_buckets:
        change(pipe, faults_copy(bucket.tag))
    pipe.execute()


def list_faults(client: redis.Redis) -> dict[str, dict]:
    """Active faults: field (``service`` or ``service:order``) -> spec."""
    faults: dict[str, str] = client.hgetall(FAULTS)  # type: ignore[assignment]
    return {field: json.loads(spec) for field, spec in faults.items()}

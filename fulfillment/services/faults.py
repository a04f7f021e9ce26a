"""Fault injection: make a simulated service fail its first N attempts.

Faults live in Redis, so setting one from the CLI affects every worker at once.
A fault applies to attempts ``1..attempts`` of a step (``attempts=None``: every
attempt, until cleared), either for every order or for one order only.
"""

from __future__ import annotations

import json
from typing import Literal

import redis

from ..keys import FAULTS

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
    spec = {"mode": mode, "attempts": -1 if attempts is None else attempts}
    client.hset(FAULTS, _field(service, order_id), json.dumps(spec))


def clear_faults(
    client: redis.Redis, service: str | None = None, order_id: str | None = None
) -> int:
    """Remove faults: all of them, or those of one service (and order). Returns how many."""
    if service is None:
        return int(client.delete(FAULTS))
    return int(client.hdel(FAULTS, _field(service, order_id)))


def list_faults(client: redis.Redis) -> dict[str, dict]:
    """Active faults: field (``service`` or ``service:order``) -> spec."""
    faults: dict[str, str] = client.hgetall(FAULTS)  # type: ignore[assignment]
    return {field: json.loads(spec) for field, spec in faults.items()}

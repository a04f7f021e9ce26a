"""What every simulated service shares: simulated latency, outages, the ledger call.

On one Redis server a service's call is one script: the fencing check against the
order's record, the fault check, the effect on the order's ledger (and the stock), in
one atomic step. On a cluster a script touches one slot, so the shared keys (the
faults, the stock) are read or changed by calls of their own: the fault is read first
and handed to the ledger's script, and the inventory reserves and gives back stock by
the reservation's idempotency key (``inventory.py``).
"""

from __future__ import annotations

import random
import time
from typing import Any

import redis

from ...engine.context import ActivityContext, UndoContext
from ...engine.scripts import Scripts
from ..errors import ServiceUnavailable, StaleAttempt
from ..keys import FAULTS, STOCK, faults_copy
from ..settings import Settings

#: what a service is called with: the step's (or undo's) context, holding the caller's
#: fencing token and the run's keys (its ledger is a companion key of the run)
Call = ActivityContext | UndoContext

SERVICE_SCRIPTS = (
    "charge", "refund", "reserve", "release", "ship", "cancel_shipment",
    # a cluster's inventory: the ledger's part and the stock's part, each in its slot
    "reserve_begin", "reserve_end", "release_begin", "release_end", "stock_take", "stock_give",
)  # fmt: skip


def service_scripts(client: redis.Redis) -> Scripts:
    """The services' Lua scripts (``services/lua``), fenced with the engine's helpers."""
    return Scripts(client, "fulfillment.orders.services", SERVICE_SCRIPTS)


class SimulatedService:
    """A service whose state lives in Redis, so every worker process sees the same one.

    Each call first waits the simulated network latency (``service_latency``
    +/- ``service_latency_jitter``), then runs one Lua script against the order's
    ledger; effects are keyed by the order id, the idempotency key. Every call
    carries the caller's fencing token, checked in the same script: a stale one is
    refused with :class:`~fulfillment.orders.errors.StaleAttempt` and changes nothing.
    """

    #: name used in fault injection and error messages
    name = "service"

    def __init__(self, client: redis.Redis, scripts: Scripts, settings: Settings) -> None:
        self.client = client
        self.scripts = scripts
        self.settings = settings
        self.clustered = settings.is_cluster

    def _latency(self) -> None:
        base = self.settings.service_latency
        if base > 0:
            jitter = self.settings.service_latency_jitter
            time.sleep(base * random.uniform(1 - jitter, 1 + jitter))

    def _keys(self, ctx: Call) -> list[str]:
        """KEYS of a ledger script: the ledger, the record and the faults; on one server
        also the stock. A cluster's faults are the copy in the order's bucket, and its
        stock is changed by calls of their own."""
        keys = [ctx.companion("ledger"), ctx.record_key]
        if self.clustered:
            return [*keys, faults_copy(ctx.keys.bucket.tag)]
        return [*keys, FAULTS, STOCK]

    def _call(self, script: str, ctx: Call, *, latency: bool = True, **args: Any) -> dict[str, Any]:
        if latency:
            self._latency()
        reply = self.scripts.call(
            script,
            self._keys(ctx),
            {"order_id": ctx.run_id, "token": ctx.token.as_json(), **args},
        )
        if reply["v"] == "stale":
            raise StaleAttempt(f"{self.name} refused a stale call: {reply['reason']}")
        if reply["v"] == "down":
            self._outage(reply["mode"])
        return reply

    def _outage(self, mode: str) -> None:
        label = self.name.capitalize()
        if mode == "hang":
            # No answer: the attempt's time limit interrupts this sleep. Without a
            # time limit (solo/threads pool) the call still fails, just late.
            time.sleep(self.settings.step_time_limit * 2 + 1)
            raise ServiceUnavailable(f"{label} service down: no response")
        raise ServiceUnavailable(f"{label} service down")

"""What every simulated service shares: simulated latency, outages, the ledger call."""

from __future__ import annotations

import random
import time
from typing import Any

import redis

from ..engine.fencing import Token
from ..engine.scripts import Scripts
from ..errors import ServiceUnavailable, StaleAttempt
from ..keys import FAULTS, STOCK, OrderKeys
from ..settings import Settings

SERVICE_SCRIPTS = ("charge", "refund", "reserve", "release", "ship", "cancel_shipment")


def service_scripts(client: redis.Redis) -> Scripts:
    """The services' Lua scripts (``services/lua``), fenced with the engine's helpers."""
    return Scripts(client, "fulfillment.services", SERVICE_SCRIPTS)


class SimulatedService:
    """A service whose state lives in Redis, so every worker process sees the same one.

    Each call first waits the simulated network latency (``service_latency``
    +/- ``service_latency_jitter``), then runs one Lua script against the order's
    ledger; effects are keyed by the order id, the idempotency key. Every call
    carries the caller's fencing token, checked in the same script: a stale one is
    refused with :class:`~fulfillment.errors.StaleAttempt` and changes nothing.
    """

    #: name used in fault injection and error messages
    name = "service"

    def __init__(self, client: redis.Redis, scripts: Scripts, settings: Settings) -> None:
        self.client = client
        self.scripts = scripts
        self.settings = settings

    def _latency(self) -> None:
        base = self.settings.service_latency
        if base > 0:
            jitter = self.settings.service_latency_jitter
            time.sleep(base * random.uniform(1 - jitter, 1 + jitter))

    def _call(self, script: str, token: Token, **args: Any) -> dict[str, Any]:
        self._latency()
        k = OrderKeys(token.run_id)
        reply = self.scripts.call(
            script,
            [k.ledger, STOCK, FAULTS, k.record],
            {"order_id": token.run_id, "token": token.as_json(), **args},
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

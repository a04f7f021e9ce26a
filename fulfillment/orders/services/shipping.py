"""Simulated shipping service: one shipment per order."""

from __future__ import annotations

import json
from typing import Any

from .base import Call, SimulatedService


class Shipping(SimulatedService):
    """Creates the order's shipment once, however often it is asked."""

    name = "delivery"

    def ship(self, ctx: Call) -> dict[str, Any]:
        """Create the shipment; returns its record (with the tracking number)."""
        return json.loads(self._call("ship", ctx)["record"])

    def cancel(self, ctx: Call) -> bool:
        """Cancel the order's shipment. False if there was none."""
        return self._call("cancel_shipment", ctx)["v"] == "ok"

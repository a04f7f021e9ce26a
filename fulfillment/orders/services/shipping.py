"""Simulated shipping service: one shipment per order."""

from __future__ import annotations

import json
from typing import Any

from ...engine.fencing import AttemptToken, UndoToken
from .base import SimulatedService


class Shipping(SimulatedService):
    """Creates the order's shipment once, however often it is asked."""

    name = "delivery"

    def ship(self, token: AttemptToken) -> dict[str, Any]:
        """Create the shipment; returns its record (with the tracking number)."""
        return json.loads(self._call("ship", token)["record"])

    def cancel(self, token: UndoToken) -> bool:
        """Cancel the order's shipment. False if there was none."""
        return self._call("cancel_shipment", token)["v"] == "ok"

"""Simulated payment gateway: charges and refunds, idempotent per order."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from ..errors import CreditCardExpired
from ..models import CreditCard
from .base import Call, SimulatedService


class PaymentGateway(SimulatedService):
    """Charges a card once per order, however often it is asked."""

    name = "payment"

    def charge(self, ctx: Call, card: CreditCard, amount: Decimal) -> dict[str, Any]:
        """Charge ``amount``; returns the charge record. Raises :class:`CreditCardExpired`."""
        if card.expired():
            self._latency()
            raise CreditCardExpired()
        reply = self._call("charge", ctx, amount=str(amount), card=card.masked)
        return json.loads(reply["record"])

    def refund(self, ctx: Call) -> dict[str, Any] | None:
        """Refund the order's charge; None if it was never charged."""
        reply = self._call("refund", ctx)
        return json.loads(reply["record"]) if reply["v"] == "ok" else None

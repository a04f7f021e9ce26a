"""The fraud screening service of the "Adding a step" variant (README)."""

from __future__ import annotations

from functools import cache

from fulfillment.engine import ActivityContext, StaleAttempt
from fulfillment.engine.connection import client_for
from fulfillment.engine.scripts import Scripts
from fulfillment.orders.errors import BusinessError, ServiceUnavailable
from fulfillment.orders.keys import FAULTS
from fulfillment.orders.models import Order
from fulfillment.orders.settings import get_settings


class FraudSuspected(BusinessError):
    """The screening refused the order: not retried, the order fails (its payment refunded)."""


class FraudScreen:
    """Scores an order once; a stale attempt's call is refused."""

    def __init__(self) -> None:
        self.scripts = Scripts(client_for(get_settings()), "tests.fraud_variant", ["fraud_check"])

    def check(self, ctx: ActivityContext, order: Order) -> int:
        token = ctx.token
        reply = self.scripts.call(
            "fraud_check",
            [ctx.companion("ledger"), FAULTS, ctx.record_key],
            {
                "order_id": token.run_id,
                "token": token.as_json(),
                "card": order.payment.credit_card.masked,
                "total": str(order.total),
                "items": len(order.items),
            },
        )
        if reply["v"] == "stale":
            raise StaleAttempt(reply["reason"])
        if reply["v"] == "down":
            raise ServiceUnavailable("Fraud screening down")
        if reply["v"] == "suspected":
            raise FraudSuspected(f"Fraud suspected: {reply['reason']}")
        return int(reply["score"])


@cache
def fraud_screen() -> FraudScreen:
    return FraudScreen()

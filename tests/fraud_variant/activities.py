"""The one new activity of the "Adding a step" variant (README)."""

from __future__ import annotations

from fulfillment.engine import ActivityContext
from fulfillment.orders.models import Order

from .services import fraud_screen


def check_fraud(ctx: ActivityContext) -> str:
    """Screen the order for fraud. Raises ``FraudSuspected``."""
    order: Order = ctx.input
    score = fraud_screen().check(ctx, order)
    return f"Fraud check passed (score {score})"

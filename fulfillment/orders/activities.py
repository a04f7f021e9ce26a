"""Activities: the business logic of each step, as in Temporal's ``activities.ts``.

Each activity gets the engine's :class:`~fulfillment.engine.ActivityContext` (the
order, the attempt's fencing token) and calls one simulated service with the token,
whose idempotency key is the order and step; it returns the step's summary. They
know nothing about Celery, retries or Redis state: the engine runs them durably.
"""

from __future__ import annotations

from ..engine import ActivityContext, UndoContext
from .models import Order
from .services import services


def _items(order: Order) -> str:
    count = len(order.items)
    return f"{count} item" if count == 1 else f"{count} items"


def process_payment(ctx: ActivityContext) -> str:
    """Charge the card for the order's total. Raises ``CreditCardExpired``."""
    order: Order = ctx.input
    services().payment.charge(ctx, order.payment.credit_card, order.total)
    return f"Payment processed for {_items(order)}"


def reserve_inventory(ctx: ActivityContext) -> str:
    """Reserve stock for every line. Raises ``UnknownItem`` / ``OutOfStock``."""
    order: Order = ctx.input
    services().inventory.reserve(ctx, order.items)
    return f"Inventory reserved for {_items(order)}"


def deliver_order(ctx: ActivityContext) -> str:
    """Hand the order to shipping."""
    order: Order = ctx.input
    shipment = services().shipping.ship(ctx)
    return f"Order delivered for {_items(order)} (tracking {shipment['tracking']})"


# --- compensations: undo a step's effect; each is idempotent -------------------------
# Each returns (undone, summary): undone is False when there was nothing to undo.


def refund_payment(ctx: UndoContext) -> tuple[bool, str]:
    """Refund the order's charge, if any."""
    refund = services().payment.refund(ctx)
    if refund is None:
        return False, "No charge to refund"
    return True, f"Payment of {refund['amount']} refunded"


def release_inventory(ctx: UndoContext) -> tuple[bool, str]:
    """Give back the order's reserved stock, if any."""
    if services().inventory.release(ctx):
        return True, "Inventory reservation released"
    return False, "No reservation to release"


def cancel_shipment(ctx: UndoContext) -> tuple[bool, str]:
    """Cancel the order's shipment, if any."""
    if services().shipping.cancel(ctx):
        return True, "Shipment cancelled"
    return False, "No shipment to cancel"

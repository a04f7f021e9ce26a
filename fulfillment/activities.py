"""Activities: the business logic of each step, as in Temporal's ``activities.ts``.

Each activity calls one simulated service with the attempt's fencing token (its
idempotency key is the order and step) and returns the step's summary. They know
nothing about Celery, retries or Redis state; :mod:`fulfillment.tasks` runs them
durably.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fencing import AttemptToken, UndoToken
from .models import Order
from .services import Services


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an attempt knows about itself (Temporal's ``Context.current().info``)."""

    order: Order
    token: AttemptToken
    services: Services

    @property
    def step(self) -> str:
        return self.token.step

    @property
    def attempt(self) -> int:
        return self.token.attempt


def _items(order: Order) -> str:
    count = len(order.items)
    return f"{count} item" if count == 1 else f"{count} items"


def process_payment(ctx: StepContext) -> str:
    """Charge the card for the order's total. Raises ``CreditCardExpired``."""
    order = ctx.order
    ctx.services.payment.charge(ctx.token, order.payment.credit_card, order.total)
    return f"Payment processed for {_items(order)}"


def reserve_inventory(ctx: StepContext) -> str:
    """Reserve stock for every line. Raises ``UnknownItem`` / ``OutOfStock``."""
    order = ctx.order
    ctx.services.inventory.reserve(ctx.token, order.items)
    return f"Inventory reserved for {_items(order)}"


def deliver_order(ctx: StepContext) -> str:
    """Hand the order to shipping."""
    order = ctx.order
    shipment = ctx.services.shipping.ship(ctx.token)
    return f"Order delivered for {_items(order)} (tracking {shipment['tracking']})"


# --- compensations: undo a step's effect; each is idempotent -------------------------


# Each returns (undone, summary): undone is False when there was nothing to undo.


def refund_payment(services: Services, token: UndoToken) -> tuple[bool, str]:
    refund = services.payment.refund(token)
    if refund is None:
        return False, "No charge to refund"
    return True, f"Payment of {refund['amount']} refunded"


def release_inventory(services: Services, token: UndoToken) -> tuple[bool, str]:
    if services.inventory.release(token):
        return True, "Inventory reservation released"
    return False, "No reservation to release"


def cancel_shipment(services: Services, token: UndoToken) -> tuple[bool, str]:
    if services.shipping.cancel(token):
        return True, "Shipment cancelled"
    return False, "No shipment to cancel"


ACTIVITIES = {
    "payment": process_payment,
    "inventory": reserve_inventory,
    "delivery": deliver_order,
}

COMPENSATIONS = {
    "refund_payment": refund_payment,
    "release_inventory": release_inventory,
    "cancel_shipment": cancel_shipment,
}

"""Redis keys of the order workflow.

The run keys (record, history, doorbell, schedules, status indexes) are the
engine's (:mod:`fulfillment.engine.keys`) in the order workflow's namespace
``fulfillment``: an order's record is ``fulfillment:{ORDER_ID}:order``. The
simulated services add the order's ledger (a companion key of the run, kept and
expired with it) and two global hashes.
"""

from __future__ import annotations

from .engine.keys import KeySpace, RunKeys, RunStatus

PREFIX = "fulfillment"
ORDERS = KeySpace(PREFIX, "order", companions=("ledger",))
STOCK = f"{PREFIX}:inventory:stock"  # hash: item name -> units in stock
CATALOGUE = f"{PREFIX}:inventory:catalogue"  # hash: item name -> JSON {price, stock}, if loaded
FAULTS = f"{PREFIX}:faults"  # hash: service -> JSON fault spec


def status_index(status: str) -> str:
    """Zset of the orders in ``status`` (an order's or a run's status; score: creation time)."""
    if status == "awaiting_approval":
        status = RunStatus.WAITING
    return ORDERS.status_index(status)


class OrderKeys(RunKeys):
    """The keys of one order."""

    def __init__(self, order_id: str) -> None:
        super().__init__(ORDERS, order_id)

    @property
    def ledger(self) -> str:
        """The simulated services' ledger of the order (charges, reservation, shipment)."""
        return self.companion("ledger")

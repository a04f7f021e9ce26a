"""Redis key layout.

Every key of one order carries the hash tag ``{<order id>}`` so the order's
record, history and service ledger live in one Redis Cluster slot. The few
global keys (indexes, timers, stock) are listed here too; see the README's
"Scaling" section for what Redis Cluster would change about them.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "fulfillment"

STATUSES = ("pending", "awaiting_approval", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})

# global keys
LEASES = f"{PREFIX}:leases"  # zset: order id -> lease deadline (running attempts)
TIMERS = f"{PREFIX}:timers"  # zset: order id -> due time (retry, approval, compensation)
QUEUED = f"{PREFIX}:queued"  # zset: order id -> when a queued step counts as lost
RETRYING = f"{PREFIX}:retrying"  # zset: order id -> time it started waiting for a retry
WORKERS = f"{PREFIX}:workers"  # zset: worker id -> last heartbeat
WATCHDOG_LOCK = f"{PREFIX}:watchdog:lock"
STOCK = f"{PREFIX}:inventory:stock"  # hash: item name -> units in stock
FAULTS = f"{PREFIX}:faults"  # hash: service -> JSON fault spec


def held_set(worker: str) -> str:
    """Set of the message ids ``worker`` holds (its heartbeat writes it; it expires with it)."""
    return f"{PREFIX}:held:{worker}"


def message_id(order_id: str, name: str, number: int) -> str:
    """The Celery task id of a step's (``number``: epoch) or compensation's message.

    Deterministic, so the watchdog can tell whether the message an order waits for
    is held by a live worker; and readable in Flower. ``lib.lua`` builds the same.
    """
    return f"{order_id}:{name}:{number}"


def status_index(status: str) -> str:
    """Zset of the orders in ``status`` (score: creation time)."""
    return f"{PREFIX}:status:{status}"


STATUS_INDEXES = tuple(status_index(s) for s in STATUSES)


@dataclass(frozen=True, slots=True)
class OrderKeys:
    """The keys of one order, in the order the Lua transition scripts expect them."""

    order_id: str

    @property
    def record(self) -> str:
        return f"{PREFIX}:{{{self.order_id}}}:order"

    @property
    def history(self) -> str:
        return f"{PREFIX}:{{{self.order_id}}}:history"

    @property
    def ledger(self) -> str:
        return f"{PREFIX}:{{{self.order_id}}}:ledger"

    @property
    def settled(self) -> str:
        """The doorbell: a list that gets one element once the order is settled."""
        return f"{PREFIX}:{{{self.order_id}}}:settled"

    def transition(self, outbox: list[str] | None = None) -> list[str]:
        """KEYS for every order transition script (see ``lua/lib.lua``).

        ``outbox``: the queue keys of held-back messages the script may push,
        after the order's own keys (``lib.lua``'s ``send_outbox``).
        """
        return [
            self.record,
            self.history,
            self.ledger,
            LEASES,
            TIMERS,
            QUEUED,
            RETRYING,
            *STATUS_INDEXES,
            self.settled,
            *(outbox or ()),
        ]

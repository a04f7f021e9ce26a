"""Redis keys of the order workflow.

The run keys (record, history, doorbell, schedules, status indexes) are the
engine's (:mod:`fulfillment.engine.keys`), derived from the order workflow's
definition (namespace ``fulfillment``, record ``order``, companion ``ledger``): on one
server an order's record is ``fulfillment:{ORDER_ID}:order``, on a cluster
``fulfillment:{b<bucket>}:ORDER_ID:order``. An activity gets its run's keys from the
engine (``ctx.keys``); the simulated services add the order's ledger (a companion key
of the run, kept and expired with it) and keys of their own, each group in one
cluster slot:

    fulfillment:{inventory}:stock             hash    item name -> units in stock
    fulfillment:{inventory}:catalogue         hash    item name -> JSON {price, stock}
    fulfillment:{inventory}:take:<key>        string  on a cluster: a reservation's items,
                                                      by its idempotency key
    fulfillment:{inventory}:released:<key>    string  on a cluster: that reservation was
                                                      given back (a late one is refused)
    fulfillment:{faults}                      hash    service -> JSON fault spec
    fulfillment:{b<bucket>}:faults            hash    on a cluster: a copy of it in every
                                                      bucket's slot, read by the services'
                                                      scripts of that bucket's orders
"""

from __future__ import annotations

PREFIX = "fulfillment"
INVENTORY = f"{PREFIX}:{{inventory}}"
STOCK = f"{INVENTORY}:stock"
CATALOGUE = f"{INVENTORY}:catalogue"
FAULTS = f"{PREFIX}:{{faults}}"


def faults_copy(tag: str) -> str:
    """The copy of the faults in the slot of the bucket tagged ``tag`` (a cluster's)."""
    return f"{PREFIX}:{{{tag}}}:faults"


def take_key(key: str) -> str:
    """Where a cluster keeps one reservation's items, by its idempotency key."""
    return f"{INVENTORY}:take:{key}"


def released_key(key: str) -> str:
    """The mark that a cluster's reservation was given back."""
    return f"{INVENTORY}:released:{key}"

"""Simulated external services, kept in Redis so all worker processes share them."""

from __future__ import annotations

import redis

from ..scripts import Scripts
from ..settings import Settings
from .faults import clear_faults, list_faults, set_fault
from .inventory import Inventory, catalogue, seed_stock
from .payment import PaymentGateway
from .shipping import Shipping

__all__ = [
    "Inventory",
    "PaymentGateway",
    "Services",
    "Shipping",
    "catalogue",
    "clear_faults",
    "list_faults",
    "seed_stock",
    "set_fault",
]


class Services:
    """The three services a step may call, sharing one client and one script set."""

    def __init__(self, client: redis.Redis, scripts: Scripts, settings: Settings) -> None:
        self.payment = PaymentGateway(client, scripts, settings)
        self.inventory = Inventory(client, scripts, settings)
        self.shipping = Shipping(client, scripts, settings)

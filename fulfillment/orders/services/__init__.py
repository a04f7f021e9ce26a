"""Simulated external services, kept in Redis so all worker processes share them."""

from __future__ import annotations

from functools import cache

import redis

from ...engine.connection import client_for
from ..settings import Settings, get_settings
from .base import service_scripts
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
    "services",
    "set_fault",
]


class Services:
    """The three services a step may call, sharing one client and one script set."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        scripts = service_scripts(client)
        self.payment = PaymentGateway(client, scripts, settings)
        self.inventory = Inventory(client, scripts, settings)
        self.shipping = Shipping(client, scripts, settings)


@cache
def services() -> Services:
    """The services of this process's deployment (the environment's settings)."""
    settings = get_settings()
    return Services(client_for(settings), settings)

"""Simulated inventory service: stock counts and all-or-nothing reservations."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from importlib.resources import files
from typing import Any

import redis

from ..engine.fencing import AttemptToken, UndoToken
from ..errors import OutOfStock, UnknownItem
from ..keys import STOCK
from ..models import OrderItem
from .base import SimulatedService


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    """The catalogue shipped with the package: item name -> {price, stock}."""
    data = json.loads((files("fulfillment.services") / "catalogue.json").read_text())
    return {item["name"]: item for item in data["items"]}


def seed_stock(client: redis.Redis, reset: bool = False) -> None:
    """Load the catalogue's stock counts (only items not stocked yet, unless ``reset``)."""
    pipe = client.pipeline(transaction=True)
    for name, item in catalogue().items():
        if reset:
            pipe.hset(STOCK, name, item["stock"])
        else:
            pipe.hsetnx(STOCK, name, item["stock"])
    pipe.execute()


class Inventory(SimulatedService):
    """Reserves stock for a whole order, once per order."""

    name = "inventory"

    def reserve(self, token: AttemptToken, items: list[OrderItem]) -> dict[str, Any]:
        """Reserve every line or none. Raises :class:`UnknownItem` or :class:`OutOfStock`."""
        wanted = Counter[str]()
        for item in items:
            wanted[item.item_name] += item.quantity
        lines = [[name, qty] for name, qty in wanted.items()]
        reply = self._call("reserve", token, items=lines)
        if reply["v"] == "unseeded":
            seed_stock(self.client)
            reply = self._call("reserve", token, items=lines)
        if reply["v"] == "unknown":
            raise UnknownItem(f"Inventory reservation failed: unknown item {reply['item']!r}")
        if reply["v"] == "out_of_stock":
            raise OutOfStock(
                f"Inventory reservation failed: {reply['item']!r} is out of stock "
                f"({reply['wanted']} wanted, {reply['available']} available)"
            )
        return json.loads(reply["record"])

    def release(self, token: UndoToken) -> bool:
        """Give the order's reservation back. False if nothing was reserved."""
        return self._call("release", token)["v"] == "ok"

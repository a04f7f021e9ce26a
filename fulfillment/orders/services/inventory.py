"""Simulated inventory service: stock counts and all-or-nothing reservations."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Any

import redis
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from ...engine.validation import field_path, one_line, problems
from ..errors import OutOfStock, StaleAttempt, UnknownItem
from ..keys import CATALOGUE, STOCK, released_key, take_key
from ..models import OrderItem, printable
from .base import Call, SimulatedService


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    """The catalogue shipped with the package: item name -> {price, stock}."""
    data = json.loads((files("fulfillment.orders.services") / "catalogue.json").read_text())
    return {item["name"]: item for item in data["items"]}


class CatalogueItem(BaseModel):
    """One entry of a catalogue file: the project's shape or the Temporal demo's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(validation_alias=AliasChoices("name", "itemName"), min_length=1,
                      max_length=200)  # fmt: skip
    price: Decimal = Field(validation_alias=AliasChoices("price", "itemPrice"), ge=0,
                           max_digits=12, decimal_places=2)  # fmt: skip
    stock: int = Field(ge=0, le=10**9)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value)


def parse_catalogue(raw: bytes) -> dict[str, dict[str, Any]]:
    """A catalogue file: ``{"items": [{"name", "price", "stock"}]}`` (this project's) or
    ``[{"itemName", "itemPrice", "stock"}]`` (the Temporal demo's ``stock_database.json``).
    Raises :class:`ValueError` with one line naming what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"invalid catalogue: not valid JSON ({exc})") from None
    if isinstance(data, dict) and set(data) <= {"items", "_comment"}:
        data = data.get("items")
    if not isinstance(data, list) or not data:
        raise ValueError("invalid catalogue: expected a non-empty list of items "
                         '(or {"items": [...]})')  # fmt: skip
    try:
        items = TypeAdapter(list[CatalogueItem]).validate_python(data)
    except ValidationError as exc:
        where = problems(exc, lambda loc: "catalogue" + field_path(loc))
        raise ValueError(one_line("invalid catalogue: ", where)) from None
    names = [i.name for i in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"invalid catalogue: item {twice[0]!r} is listed twice")
    return {i.name: {"name": i.name, "price": str(i.price), "stock": i.stock} for i in items}


def load_catalogue(client: redis.Redis, items: dict[str, dict[str, Any]]) -> None:
    """Replace the catalogue and the stock with ``items`` (one atomic write)."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(CATALOGUE, STOCK)
    pipe.hset(CATALOGUE, mapping={n: json.dumps(i) for n, i in items.items()})
    pipe.hset(STOCK, mapping={n: i["stock"] for n, i in items.items()})
    pipe.execute()


def current_catalogue(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The loaded catalogue if one was loaded, else the packaged one."""
    loaded = client.hgetall(CATALOGUE)
    if loaded:
        return {str(n): json.loads(v) for n, v in loaded.items()}
    return catalogue()


def seed_stock(client: redis.Redis, reset: bool = False) -> None:
    """Load the catalogue's stock counts (only items not stocked yet, unless ``reset``)."""
    pipe = client.pipeline(transaction=True)
    for name, item in current_catalogue(client).items():
        if reset:
            pipe.hset(STOCK, name, item["stock"])
        else:
            pipe.hsetnx(STOCK, name, item["stock"])
    pipe.execute()


class Inventory(SimulatedService):
    """Reserves stock for a whole order, once per order."""

    name = "inventory"

    def reserve(self, ctx: Call, items: list[OrderItem]) -> dict[str, Any]:
        """Reserve every line or none. Raises :class:`UnknownItem` or :class:`OutOfStock`."""
        wanted = Counter[str]()
        for item in items:
            wanted[item.item_name] += item.quantity
        lines = [[name, qty] for name, qty in wanted.items()]
        if self.clustered:
            return self._reserve_on_cluster(ctx, lines)
        reply = self._call("reserve", ctx, items=lines)
        if reply["v"] == "unseeded":
            seed_stock(self.client)
            reply = self._call("reserve", ctx, items=lines)
        self._refusal(reply)
        return json.loads(reply["record"])

    @staticmethod
    def _refusal(reply: dict[str, Any]) -> None:
        if reply["v"] == "unknown":
            raise UnknownItem(f"Inventory reservation failed: unknown item {reply['item']!r}")
        if reply["v"] == "out_of_stock":
            raise OutOfStock(
                f"Inventory reservation failed: {reply['item']!r} is out of stock "
                f"({reply['wanted']} wanted, {reply['available']} available)"
            )

    def release(self, ctx: Call) -> bool:
        """Give the order's reservation back. False if nothing was reserved."""
        if self.clustered:
            return self._release_on_cluster(ctx)
        return self._call("release", ctx)["v"] == "ok"

    # On a cluster the stock is in a slot of its own: the ledger's part and the stock's
    # part are calls of their own, joined by the reservation's idempotency key
    # (lua/reserve_begin.lua explains the protocol).

    def _stock(self, script: str, key: str, **args: Any) -> dict[str, Any]:
        keys = [STOCK, take_key(key), released_key(key)]
        return self.scripts.call(script, keys, {"ttl": int(self.settings.retention), **args})

    def _reserve_on_cluster(self, ctx: Call, lines: list[list[Any]]) -> dict[str, Any]:
        key = ctx.token.idempotency_key
        begun = self._call("reserve_begin", ctx, key=key)
        if begun["v"] == "ok":
            return json.loads(begun["record"])
        taken = self._stock("stock_take", key, items=lines)
        if taken["v"] == "unseeded":
            seed_stock(self.client)
            taken = self._stock("stock_take", key, items=lines)
        if taken["v"] == "released":
            raise StaleAttempt("inventory refused a stale call: the reservation was given back")
        self._refusal(taken)
        ended = self._call("reserve_end", ctx, latency=False, record=taken["record"])
        return json.loads(ended["record"])

    def _release_on_cluster(self, ctx: Call) -> bool:
        begun = self._call("release_begin", ctx)
        if begun["v"] != "go":
            return begun["v"] == "ok"
        given = self._stock("stock_give", begun["key"])
        ended = self._call("release_end", ctx, latency=False, given=given["v"] == "ok")
        return ended["v"] == "ok"

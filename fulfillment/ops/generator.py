"""Random orders, as the Temporal demo's ``--numOrders/--invalidPercentage`` generator.

Kinds (each order is at most one):

* ``valid`` -- 1-3 lines of stocked catalogue items, a card valid for years;
* ``invalid`` -- like the demo, the first item name gets ``@@@`` appended: the
  inventory service does not know it, so the order fails *after* payment and
  the charge is refunded;
* ``expensive`` -- total over the approval threshold: waits for approval;
* ``expired_card`` -- card expired last year: fails at payment, no retry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from ..orders.services import catalogue

KINDS = ("valid", "invalid", "expensive", "expired_card")


@dataclass(frozen=True)
class GeneratedOrder:
    kind: str
    order: dict[str, Any]


def card(expired: bool = False, today: date | None = None) -> dict[str, str]:
    """A test card: valid for three more years, or expired last year."""
    today = today or date.today()
    year = today.year - 1 if expired else today.year + 3
    return {"number": "4111 1111 1111 1111", "expiration": f"12/{year % 100:02d}"}


def _line(name: str, quantity: int) -> dict[str, Any]:
    return {
        "itemName": name,
        "itemPrice": catalogue()[name]["price"],
        "quantity": quantity,
    }


def make_order(kind: str, rng: random.Random, threshold: Decimal) -> dict[str, Any]:
    """One order of ``kind``, as the JSON a customer would submit (camelCase)."""
    if kind not in KINDS:
        raise ValueError(f"unknown order kind {kind!r}")
    stocked = [name for name, item in catalogue().items() if item["stock"] > 0]
    if kind == "expensive":
        name = rng.choice([n for n in stocked if Decimal(catalogue()[n]["price"]) > 1000])
        price = Decimal(catalogue()[name]["price"])
        quantity = math.floor(threshold / price) + 1
        items = [_line(name, quantity)]
    else:
        names = rng.sample(stocked, rng.randint(1, 3))
        items = [_line(name, rng.randint(1, 3)) for name in names]
        total = sum(Decimal(i["itemPrice"]) * i["quantity"] for i in items)
        while total > threshold:  # keep ordinary orders under the approval threshold
            items.pop()
            total = sum(Decimal(i["itemPrice"]) * i["quantity"] for i in items)
        if kind == "invalid":
            items[0]["itemName"] += "@@@"
    return {"items": items, "payment": {"creditCard": card(expired=kind == "expired_card")}}


def generate(
    count: int,
    *,
    invalid_pct: float = 0,
    expensive_pct: float = 0,
    expired_pct: float = 0,
    threshold: Decimal = Decimal(10000),
    seed: int | None = None,
) -> list[GeneratedOrder]:
    """``count`` orders with the given percentages of each special kind, shuffled."""
    if count < 0:
        raise ValueError("count must be >= 0")
    for label, pct in (
        ("invalid", invalid_pct),
        ("expensive", expensive_pct),
        ("expired card", expired_pct),
    ):
        if not 0 <= pct <= 100:
            raise ValueError(f"{label} percentage must be between 0 and 100, got {pct}")
    if invalid_pct + expensive_pct + expired_pct > 100:
        raise ValueError("the percentages add up to more than 100")
    rng = random.Random(seed)
    kinds = (
        ["invalid"] * math.floor(count * invalid_pct / 100)
        + ["expensive"] * math.floor(count * expensive_pct / 100)
        + ["expired_card"] * math.floor(count * expired_pct / 100)
    )
    kinds += ["valid"] * (count - len(kinds))
    rng.shuffle(kinds)
    return [GeneratedOrder(kind, make_order(kind, rng, threshold)) for kind in kinds]

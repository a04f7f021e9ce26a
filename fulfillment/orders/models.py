"""Input models: what a customer submits.

JSON field names are snake_case or the Temporal demo's camelCase (``itemName``,
``itemPrice``, ``creditCard``). Unknown fields are rejected. Money is
:class:`~decimal.Decimal` end to end, so totals are exact.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    computed_field,
    field_validator,
)
from pydantic.alias_generators import to_camel

from ..engine.validation import field_path, one_line, printable, problems
from .errors import InvalidOrder

ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/[0-9]{2}")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
        str_strip_whitespace=True,
    )


ItemName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2, allow_inf_nan=False)]


class OrderItem(_Model):
    """One line of an order."""

    item_name: ItemName
    item_price: Price
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000)]

    @field_validator("item_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value)

    @field_validator("item_price")
    @classmethod
    def _not_negative_zero(cls, value: Decimal) -> Decimal:
        if value.is_signed():  # -0 compares equal to 0 and passes ge=0
            raise ValueError("must not be negative")
        return value

    @property
    def subtotal(self) -> Decimal:
        return self.item_price * self.quantity


class CreditCard(_Model):
    """A card: number (12-19 digits, spaces and dashes allowed) and expiry ``MM/YY``."""

    number: str
    expiration: str

    @field_validator("expiration")
    @classmethod
    def _month_year(cls, value: str) -> str:
        if not _EXPIRY.fullmatch(value):
            raise ValueError("must be MM/YY with a month from 01 to 12")
        return value

    @field_validator("number")
    @classmethod
    def _digits(cls, value: str) -> str:
        digits = re.sub(r"[ -]", "", value)
        if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise ValueError("must be 12 to 19 digits (spaces and dashes allowed)")
        return digits

    @property
    def masked(self) -> str:
        """The number as it may be shown or logged: only the last four digits."""
        return mask_card(self.number)

    def expired(self, today: date | None = None) -> bool:
        """True if the expiry month is before the current month."""
        today = today or date.today()
        month, year = (int(part) for part in self.expiration.split("/"))
        return (2000 + year, month) < (today.year, today.month)

    def __repr_args__(self):  # never show the full number in reprs or logs
        yield "number", self.masked
        yield "expiration", self.expiration


class Payment(_Model):
    """How the order is paid."""

    credit_card: CreditCard


class Order(_Model):
    """An order as submitted. ``id`` is generated (``order-<uuid>``) when absent."""

    id: Annotated[str, StringConstraints(pattern=ORDER_ID_PATTERN)] = Field(
        default_factory=lambda: f"order-{uuid.uuid4()}"
    )
    items: list[OrderItem] = Field(min_length=1)
    payment: Payment

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> Decimal:
        """Exact total of all lines."""
        return sum((item.subtotal for item in self.items), Decimal(0))

    def canonical_json(self) -> str:
        """The stored form: snake_case JSON, stable key order, money as strings."""
        return json.dumps(self.model_dump(mode="json", exclude={"total"}), sort_keys=True)

    def digest(self) -> str:
        """Content hash without the id: tells a retried submission from a reused id."""
        body = self.model_dump(mode="json", exclude={"id", "total"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What may be displayed anywhere (Flower, logs, the order's views): no full card
        number. ``lines``: every line as ``[name, quantity, price]``."""
        return {
            "items": len(self.items),
            "lines": [[i.item_name, i.quantity, str(i.item_price)] for i in self.items],
            "total": str(self.total),
            "card": self.payment.credit_card.masked,
        }


def mask_card(number: str) -> str:
    """``4111111111111111`` -> ``************1111``."""
    digits = re.sub(r"\D", "", number)
    return "*" * max(len(digits) - 4, 0) + digits[-4:]


# --- parsing with errors that name the field ----------------------------------------


def explain(exc: ValidationError) -> str:
    """One line naming every offending field. Input values are never echoed."""
    return one_line("invalid order: ", problems(exc, lambda loc: field_path(loc, "order")))


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _integer(text: str) -> int | Decimal:
    """``json.loads`` integer hook: keeps the sign of ``-0``, which ``int`` would drop."""
    return Decimal(text) if text == "-0" else int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a key given twice is an error, not "last one wins"."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def parse_order(
    data: Order | dict[str, Any] | str | bytes, *, max_bytes: int, max_items: int
) -> Order:
    """Validate ``data`` (a model, a mapping, or JSON text/bytes) into an :class:`Order`.

    Raises :class:`InvalidOrder` with a message naming the problem.
    """
    if isinstance(data, bytes | bytearray | str):
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) > max_bytes:
            raise InvalidOrder(f"invalid order: payload is {len(raw)} bytes, limit is {max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidOrder(f"invalid order: not valid UTF-8 (byte {exc.start})") from None
        try:
            data = json.loads(
                text, parse_float=Decimal, parse_int=_integer, object_pairs_hook=_unique_keys
            )
        except _DuplicateKey as exc:
            raise InvalidOrder(f"invalid order: duplicate key {exc.key!r}") from None
        except (ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "unparseable number"
            raise InvalidOrder(f"invalid order: not valid JSON ({reason})") from None
    if isinstance(data, Order):
        order = data
    elif isinstance(data, dict):
        try:
            order = Order.model_validate(data)
        except ValidationError as exc:
            raise InvalidOrder(explain(exc)) from None
        except RecursionError:
            raise InvalidOrder("invalid order: nested too deeply") from None
    else:
        raise InvalidOrder(f"invalid order: expected a JSON object, got {type(data).__name__}")
    if len(order.items) > max_items:
        raise InvalidOrder(f"invalid order: items: {len(order.items)} lines, limit is {max_items}")
    size = len(order.canonical_json().encode())
    if size > max_bytes:
        raise InvalidOrder(f"invalid order: payload is {size} bytes, limit is {max_bytes}")
    return order

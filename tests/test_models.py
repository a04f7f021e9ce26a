"""Order validation: what is accepted, what is refused, and that refusals name the field."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from fulfillment.orders.errors import InvalidOrder
from fulfillment.orders.models import CreditCard, Order, parse_order

from .support import order_doc

LIMITS = {"max_bytes": 64 * 1024, "max_items": 100}


def parse(data):  # type: ignore[no-untyped-def]
    return parse_order(data, **LIMITS)


def test_camel_and_snake_case_are_both_accepted() -> None:
    camel = parse(order_doc(("Yoga Mat", "29.90", 2), order_id="o-1"))
    snake = parse(
        {
            "id": "o-1",
            "items": [{"item_name": "Yoga Mat", "item_price": "29.90", "quantity": 2}],
            "payment": {"credit_card": {"number": "4111 1111 1111 1111", "expiration": "12/39"}},
        }
    )
    assert camel == snake
    assert camel.total == Decimal("59.80")


def test_total_is_exact_decimal_from_json_floats() -> None:
    raw = (
        b'{"items": [{"itemName": "A", "itemPrice": 0.1, "quantity": 3},'
        b' {"itemName": "B", "itemPrice": 0.2, "quantity": 1}],'
        b' "payment": {"creditCard": {"number": "4111111111111111", "expiration": "01/40"}}}'
    )
    assert parse(raw).total == Decimal("0.50")


def test_id_is_generated_when_absent() -> None:
    order = parse(order_doc())
    assert order.id.startswith("order-") and len(order.id) > 20


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(items=[]), "items"),
        (lambda d: d["items"][0].update(quantity=0), "items[0].quantity"),
        (lambda d: d["items"][0].update(quantity="2"), "items[0].quantity"),
        (lambda d: d["items"][0].update(itemPrice="-1.00"), "items[0].itemPrice"),
        (lambda d: d["items"][0].update(itemPrice="abc"), "items[0].itemPrice"),
        (lambda d: d["items"][0].update(itemPrice="1.001"), "items[0].itemPrice"),
        (lambda d: d["items"][0].update(colour="red"), "items[0].colour"),
        (lambda d: d.update(coupon="X"), "coupon"),
        (lambda d: d["payment"]["creditCard"].update(expiration="13/30"), "expiration"),
        (lambda d: d["payment"]["creditCard"].update(expiration="2030-01"), "expiration"),
        (lambda d: d["payment"]["creditCard"].update(number="4111"), "number"),
        (lambda d: d.pop("payment"), "payment"),
        (lambda d: d["items"][0].pop("itemName"), "itemName"),
    ],
)
def test_bad_fields_are_named(mutate, field) -> None:  # type: ignore[no-untyped-def]
    doc = order_doc()
    mutate(doc)
    with pytest.raises(InvalidOrder) as info:
        parse(doc)
    assert field in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b"x" * (64 * 1024 + 1), "limit"),
    ],
)
def test_bad_payloads_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidOrder, match=needle):
        parse(raw)


def test_item_count_limit() -> None:
    doc = order_doc(*[("Yoga Mat", "1.00", 1)] * 101)
    with pytest.raises(InvalidOrder, match="limit is 100"):
        parse(doc)


def test_refusals_never_echo_the_card_number() -> None:
    doc = order_doc(card="4000 0000 0000 0002", expiration="99/99")
    with pytest.raises(InvalidOrder) as info:
        parse(doc)
    assert "4000" not in str(info.value) and "0002" not in str(info.value)


def test_card_is_masked_in_repr_and_summary() -> None:
    order = parse(order_doc(card="4000-0000-0000-0002"))
    assert "4000000000000002" not in repr(order)
    assert order.summary()["card"].endswith("0002")
    assert "4000000000000002" not in str(order.summary())


def test_expiry_is_the_end_of_the_month() -> None:
    card = CreditCard(number="4111111111111111", expiration="11/26")
    assert not card.expired(date(2026, 11, 30))
    assert card.expired(date(2026, 12, 1))


def test_models_round_trip() -> None:
    order = parse(order_doc(order_id="o-2"))
    assert Order.model_validate_json(order.canonical_json()) == order

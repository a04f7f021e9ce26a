"""Bad input, generated (hypothesis), through the Python API and ``fulfillment submit``.

Every malformed order gets a clear error naming the problem, the CLI exits
non-zero with one line, and nothing is stored or enqueued.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fulfillment.orders.errors import InvalidOrder

from .support import Deployment, order_doc

VALID = order_doc(order_id="bad-input-base")

# (class name, mutation of a valid order, text the error must contain)
WRONG_TYPES = st.one_of(
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _set(path: tuple[Any, ...], value: Any):  # type: ignore[no-untyped-def]
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path: tuple[Any, ...]):  # type: ignore[no-untyped-def]
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


FIELDS = {
    ("items", 0, "itemName"): "itemName",
    ("items", 0, "itemPrice"): "itemPrice",
    ("items", 0, "quantity"): "quantity",
    ("payment", "creditCard", "number"): "number",
    ("payment", "creditCard", "expiration"): "expiration",
    ("items",): "items",
    ("payment",): "payment",
    ("payment", "creditCard"): "creditCard",
}

field_paths = st.sampled_from(sorted(FIELDS, key=str))


def bad_expiry() -> st.SearchStrategy[str]:
    import re

    ok = re.compile(r"^\s*(0[1-9]|1[0-2])/\d{2}\s*$")
    return st.text(max_size=12).filter(lambda s: not ok.match(s))


MUTATIONS = st.one_of(
    # wrong types
    st.tuples(st.just("wrong type"), field_paths, WRONG_TYPES).map(
        lambda t: (t[0], _set(t[1], t[2]), FIELDS[t[1]])
    ),
    # missing fields
    field_paths.map(lambda p: ("missing field", _drop(p), FIELDS[p])),
    # unknown fields, at the top, in an item, in the card
    st.tuples(
        st.sampled_from([(), ("items", 0), ("payment",), ("payment", "creditCard")]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    )
    .filter(lambda t: t[1] not in {"id", "items", "payment", "quantity", "number", "expiration"})
    .filter(lambda t: t[1] not in {"item_name", "item_price", "credit_card", "creditCard"})
    .filter(lambda t: t[1] not in {"itemName", "itemPrice", "itemname", "itemprice"})
    .map(lambda t: ("unknown field", _set((*t[0], t[1]), 1), t[1])),
    # negative and huge numbers
    st.one_of(
        st.integers(max_value=-1),
        st.decimals(max_value=Decimal("-0.01"), places=2, allow_nan=False),
    ).map(lambda v: ("negative price", _set(("items", 0, "itemPrice"), str(v)), "itemPrice")),
    st.integers(max_value=0).map(
        lambda v: ("quantity < 1", _set(("items", 0, "quantity"), v), "quantity")
    ),
    st.integers(min_value=10_001).map(
        lambda v: ("huge quantity", _set(("items", 0, "quantity"), v), "quantity")
    ),
    st.integers(min_value=10**10).map(
        lambda v: ("huge price", _set(("items", 0, "itemPrice"), v), "itemPrice")
    ),
    st.text(alphabet="abcxyz!?", min_size=1, max_size=6).map(
        lambda v: ("non-numeric price", _set(("items", 0, "itemPrice"), v), "itemPrice")
    ),
    # bad expiry strings
    bad_expiry().map(
        lambda v: ("bad expiry", _set(("payment", "creditCard", "expiration"), v), "expiration")
    ),
    # empty and huge item lists
    st.just(("empty items", _set(("items",), []), "items")),
    st.integers(min_value=101, max_value=300).map(
        lambda n: ("too many items", _set(("items",), [VALID["items"][0]] * n), "items")
    ),
)


def _assert_nothing_stored(d: Deployment) -> None:
    keys = [k for k in d.redis.scan_iter("fulfillment:{*") if True]
    assert keys == [], keys
    assert d.redis.llen(d.settings.queue) == 0
    assert d.redis.zcard("fulfillment:status:pending") == 0


@pytest.fixture(scope="module")
def idle(server, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A deployment with no workers: anything enqueued would stay visible in the queue."""
    db = server.acquire()
    d = Deployment(f"{server.url}/{db}", tmp_path_factory.mktemp("bad"))
    yield d
    d.close()
    server.release(db)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(MUTATIONS)
def test_api_refuses_malformed_orders(idle: Deployment, case) -> None:  # type: ignore[no-untyped-def]
    name, mutate, needle = case
    doc = copy.deepcopy(VALID)
    mutate(doc)
    with pytest.raises(InvalidOrder) as info:
        idle.client.place_order(doc)
    message = str(info.value)
    assert message.startswith("invalid order: ") and needle in message, (name, message)
    assert "4111111111111111" not in message and "\n" not in message
    _assert_nothing_stored(idle)


RAW = st.one_of(
    st.binary(min_size=1, max_size=64)
    .filter(lambda b: not _utf8(b))
    .map(lambda b: ("non-UTF-8", b, "UTF-8")),
    st.text(max_size=40)
    .filter(lambda t: not _json(t))
    .map(lambda t: ("not JSON", t.encode(), "JSON")),
    st.integers(min_value=64 * 1024 + 1, max_value=200 * 1024).map(
        lambda n: ("oversized", b'{"items": "' + b"x" * n + b'"}', "limit")
    ),
    st.sampled_from([b"[]", b"1", b'"order"', b"null"]).map(
        lambda b: ("not an object", b, "JSON object")
    ),
)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _json(t: str) -> bool:
    try:
        return isinstance(json.loads(t), dict)
    except ValueError:
        return False


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(RAW)
def test_api_refuses_malformed_payloads(idle: Deployment, case) -> None:  # type: ignore[no-untyped-def]
    _name, payload, needle = case
    with pytest.raises(InvalidOrder, match=needle):
        idle.client.place_order(payload)
    _assert_nothing_stored(idle)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(MUTATIONS, RAW))
def test_cli_submit_refuses_bad_input(idle: Deployment, case) -> None:  # type: ignore[no-untyped-def]
    name, second, needle = case
    if isinstance(second, bytes):
        payload = second
    else:
        doc = copy.deepcopy(VALID)
        second(doc)
        payload = json.dumps(doc).encode()
    out = idle.cli("submit", input=payload)
    assert out.returncode == 1, (name, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid order: "), out.stderr
    assert needle in lines[0], (name, lines[0])
    assert out.stdout == ""
    _assert_nothing_stored(idle)


def test_size_limit_is_configurable(deploy) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_MAX_ORDER_BYTES="300")
    big = order_doc(*[("Yoga Mat", "29.90", 1)] * 4)
    with pytest.raises(InvalidOrder, match="limit is 300"):
        d.client.place_order(big)
    out = d.cli("submit", input=json.dumps(big))
    assert out.returncode == 1 and "limit is 300" in out.stderr
    bad = d.cli("status", "x", FULFILLMENT_MAX_ORDER_BYTES="abc")
    assert bad.returncode == 1 and "FULFILLMENT_MAX_ORDER_BYTES" in bad.stderr

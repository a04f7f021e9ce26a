"""Input edges fault injection found (issue "1/4", item 8): each is refused in one line.

Approval timeouts that are not finite positive numbers of seconds, duplicate JSON
keys, Unicode line/format controls in item names, a price of -0, and decisions
that arrive after the approval deadline (decided on the server's clock).
"""

from __future__ import annotations

import json

import pytest

from fulfillment.orders.errors import DecisionError, InvalidOrder
from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, Deployment, order_doc, wait_until


def nothing_stored(d: Deployment) -> None:
    assert list(d.redis.scan_iter("fulfillment:{*")) == []
    assert d.redis.llen(d.settings.queue) == 0


@pytest.fixture(scope="module")
def idle(server, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A deployment with no workers: anything stored or enqueued stays visible."""
    db = server.acquire()
    d = Deployment(f"{server.url}/{db}", tmp_path_factory.mktemp("edges"))
    yield d
    d.close()
    server.release(db)


BAD_TIMEOUTS = [float("inf"), float("-inf"), float("nan"), 1e300, -1.0, 0.0, 86400.5]


@pytest.mark.parametrize("seconds", BAD_TIMEOUTS, ids=str)
def test_api_refuses_approval_timeouts_that_are_not_sane(idle: Deployment, seconds: float) -> None:
    with pytest.raises(ValueError, match="approval timeout must be more than 0") as info:
        idle.client.place_order(order_doc(EXPENSIVE), approval_timeout=seconds)
    assert "\n" not in str(info.value)
    nothing_stored(idle)


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e300", "-5", "0", "1e5"])
def test_cli_refuses_approval_timeouts_that_are_not_sane(idle: Deployment, text: str) -> None:
    out = idle.cli("submit", f"--approval-timeout={text}", input=json.dumps(order_doc(EXPENSIVE)))
    assert out.returncode == 1, out
    assert out.stderr.startswith("error: approval timeout must be") and out.stderr.count("\n") == 1
    assert out.stdout == ""
    nothing_stored(idle)


def test_settings_refuse_infinite_durations(idle: Deployment) -> None:
    out = idle.cli("list", FULFILLMENT_APPROVAL_TIMEOUT="inf")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "FULFILLMENT_APPROVAL_TIMEOUT" in out.stderr


def test_duplicate_json_keys_are_refused(idle: Deployment) -> None:
    text = json.dumps(order_doc())
    duplicated = text.replace('"quantity": 1', '"quantity": 1, "quantity": 5', 1)
    assert duplicated != text
    with pytest.raises(InvalidOrder, match="duplicate key 'quantity'"):
        idle.client.place_order(duplicated)
    out = idle.cli("submit", input=duplicated)
    assert out.returncode == 1 and out.stderr == "error: invalid order: duplicate key 'quantity'\n"
    nothing_stored(idle)


@pytest.mark.parametrize("char", ["\u0085", "\u2028", "\u2029", "\u202e", "\u200b", "\x7f"])
def test_item_names_with_line_or_format_controls_are_refused(idle: Deployment, char: str) -> None:
    doc = order_doc((f"Yoga{char}Mat", "29.90", 1))
    with pytest.raises(InvalidOrder, match=r"items\[0\]\.itemName: .*U\+"):
        idle.client.place_order(doc)
    out = idle.cli("submit", input=json.dumps(doc))
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "itemName" in out.stderr
    nothing_stored(idle)


def test_joiners_in_emoji_names_are_fine(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    name = "Sticker \U0001f469\u200d\U0001f4bb"  # woman technologist: a ZWJ sequence
    assert d.client.place_order(order_doc((name, "1.00", 1))).status() is OrderStatus.PENDING


@pytest.mark.parametrize("price", ["-0", "-0.0", '"-0"', '"-0.00"'])
def test_negative_zero_price_is_refused(idle: Deployment, price: str) -> None:
    text = json.dumps(order_doc(("Yoga Mat", "1.00", 1))).replace('"1.00"', price)
    with pytest.raises(InvalidOrder, match=r"itemPrice: must not be negative"):
        idle.client.place_order(text)
    nothing_stored(idle)


def test_a_decision_after_the_deadline_is_refused_on_the_server_clock(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    worker = d.start_worker()
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid), approval_timeout=1)
    view = d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    worker.destroy()  # nobody left to time it out: the decision itself must see the deadline
    assert view.approval.deadline is not None
    deadline_us = int(view.approval.deadline.timestamp() * 1_000_000)

    def server_us() -> int:
        seconds, micros = d.redis.time()
        return seconds * 1_000_000 + micros

    wait_until(lambda: server_us() >= deadline_us + 1000, 10, "the deadline to pass")
    with pytest.raises(DecisionError, match="already failed"):
        d.client.approve_order(oid, by="late")
    view = d.client.get_order(oid)
    assert view.status is OrderStatus.FAILED and view.failure is not None
    assert view.failure.type == "ApprovalTimeout"
    assert view.approval.decision == "timed_out"
    for decide in (d.client.reject_order, d.client.cancel_order):
        with pytest.raises(DecisionError, match="already failed"):
            decide(oid)


@pytest.mark.parametrize("by", ["bob\nSUCCESS", "a\u202eb", "x" * 201])
def test_decision_names_and_reasons_are_checked(deploy, oid: str, by: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    with pytest.raises(ValueError, match="invalid by: ") as info:
        d.client.approve_order(oid, by=by)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="invalid reason: "):
        d.client.reject_order(oid, reason="x\u2028y")
    assert d.client.get_order(oid).approval.decision is None
    out = d.cli("approve", oid, "--by", by)
    assert out.returncode == 1 and out.stderr.startswith("error: invalid by: ")
    assert out.stderr.count("\n") == 1

"""The behaviour contract on live workers: happy path, business errors, retries, compensation."""

from __future__ import annotations

import itertools
import json

import pytest

from fulfillment.orders.errors import OrderConflict, OrderFailed
from fulfillment.orders.services import clear_faults, set_fault
from fulfillment.orders.state import OrderStatus

from .support import Deployment, order_doc, wait_until


def attempts(d: Deployment, order_id: str, step: str):  # type: ignore[no-untyped-def]
    return next(s for s in d.client.timeline(order_id).steps if s.name == step).attempts


def test_happy_path_result_is_each_steps_summary(shared: Deployment, oid: str) -> None:
    handle = shared.client.place_order(order_doc(order_id=oid))
    result = handle.result(timeout=30)
    assert result.startswith(
        "Order fulfilled: Payment processed for 2 items, Inventory reserved for 2 items, "
        "Order delivered for 2 items (tracking TRK"
    )
    view = handle.view()
    assert view.status is OrderStatus.COMPLETED
    assert [(s.name, s.state, s.attempts) for s in view.steps] == [
        ("payment", "completed", 1),
        ("inventory", "completed", 1),
        ("delivery", "completed", 1),
    ]
    for step in ("payment", "inventory", "delivery"):
        (attempt,) = attempts(shared, oid, step)
        assert attempt.outcome == "succeeded"
        assert attempt.worker and attempt.task_id and attempt.duration_ms is not None
    ledger = shared.ledger(oid)
    assert (ledger["charge_calls"], ledger["reserve_calls"], ledger["ship_calls"]) == ("1",) * 3
    types = [e.type for e in handle.history()]
    assert types[0] == "order_placed" and types[-1] == "order_completed"


def test_expired_card_fails_once_without_retry(shared: Deployment, oid: str) -> None:
    handle = shared.client.place_order(order_doc(order_id=oid, expiration="01/20"))
    with pytest.raises(OrderFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "CreditCardExpired"
    assert info.value.message == "Payment failed: Credit card expired"
    view = handle.view()
    assert view.status is OrderStatus.FAILED
    assert view.steps[0].attempts == 1 and view.steps[1].attempts == 0
    (attempt,) = attempts(shared, oid, "payment")
    assert attempt.retryable is False and attempt.error_type == "CreditCardExpired"
    assert "charge" not in shared.ledger(oid)
    assert view.compensations == [] or not view.compensated


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_inventory_downtime_retries_with_backoff(shared: Deployment, oid: str, mode: str) -> None:
    down = 3 if mode == "raise" else 2
    set_fault(shared.redis, "inventory", attempts=down, mode=mode, order_id=oid)
    handle = shared.client.place_order(order_doc(order_id=oid))
    assert handle.result(timeout=60).startswith("Order fulfilled:")
    tries = attempts(shared, oid, "inventory")
    assert [a.outcome for a in tries] == ["failed"] * down + ["succeeded"]
    expected_error = "ServiceUnavailable" if mode == "raise" else "StepTimeout"
    assert {a.error_type for a in tries[:-1]} == {expected_error}
    # Temporal's default policy, time-scaled: 0.1 s, 0.2 s, 0.4 s (x2).
    assert [a.retry_in_ms for a in tries[:-1]] == [100 * 2**i for i in range(down)]
    if mode == "hang":  # each hanging attempt was cut at the 1 s limit
        assert all(900 <= a.duration_ms <= 2500 for a in tries[:-1])
    for earlier, later in itertools.pairwise(tries):
        gap = (later.started_at - earlier.started_at).total_seconds() * 1000
        assert gap >= earlier.retry_in_ms + (earlier.duration_ms or 0) - 50
    assert attempts(shared, oid, "payment")[0].outcome == "succeeded"
    assert len(attempts(shared, oid, "payment")) == 1
    ledger = shared.ledger(oid)
    assert ledger["charge_calls"] == "1" and ledger["ship_calls"] == "1"


def test_stuck_step_then_fixed_completes_from_that_step(shared: Deployment, oid: str) -> None:
    set_fault(shared.redis, "inventory", attempts=None, mode="raise", order_id=oid)
    handle = shared.client.place_order(order_doc(order_id=oid))
    wait_until(lambda: handle.view().steps[1].attempts >= 4, 30, "four failed attempts")
    view = handle.view()
    assert view.status is OrderStatus.RUNNING
    assert view.current_step == "inventory"
    listed = [v.id for v in shared.client.list_orders(retrying=True, limit=1000)]
    assert oid in listed or handle.view().phase != "retry_wait"
    clear_faults(shared.redis, "inventory", order_id=oid)
    assert handle.result(timeout=30).startswith("Order fulfilled:")
    tries = attempts(shared, oid, "inventory")
    assert len(tries) >= 5 and tries[-1].outcome == "succeeded"
    assert all(a.outcome == "failed" for a in tries[:-1])
    ledger = shared.ledger(oid)
    assert ledger["charge_calls"] == "1", ledger


@pytest.mark.parametrize(
    ("item", "error"),
    [("Unicorn Saddle", "UnknownItem"), ("Limited Edition Vinyl Box", "OutOfStock")],
)
def test_permanent_failure_after_payment_is_refunded(
    shared: Deployment, oid: str, item: str, error: str
) -> None:
    handle = shared.client.place_order(order_doc((item, "99.00", 1), order_id=oid))
    with pytest.raises(OrderFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == error
    assert info.value.compensations == ["Payment of 99.00 refunded"]
    ledger = shared.ledger(oid)
    charge, refund = json.loads(ledger["charge"]), json.loads(ledger["refund"])
    assert refund["charge"] == charge["id"] and refund["amount"] == "99.00"
    assert ledger["refund_calls"] == "1"
    assert "reservation" not in ledger and "shipment" not in ledger
    types = [e.type for e in handle.history()]
    # the failure is known at once, and the order reads failed only once it is refunded
    assert types.index("order_compensating") < types.index("compensated")
    assert types.index("compensated") < types.index("order_failed")


def test_cancel_after_reservation_refunds_and_releases(shared: Deployment, oid: str) -> None:
    set_fault(shared.redis, "delivery", attempts=None, mode="raise", order_id=oid)
    handle = shared.client.place_order(order_doc(order_id=oid))
    wait_until(lambda: handle.view().steps[2].attempts >= 1, 30, "a delivery attempt")
    shared.client.cancel_order(oid, reason="customer changed their mind", by="test")
    view = shared.wait(oid)
    assert view.status is OrderStatus.CANCELLED
    assert view.failure is not None and view.failure.message == "customer changed their mind"
    assert sorted(view.compensated) == [
        "Inventory reservation released",
        "Payment of 497.99 refunded",
    ]
    ledger = shared.ledger(oid)
    assert "refund" in ledger and "release" in ledger and "shipment" not in ledger


def test_place_order_is_idempotent_on_the_id(shared: Deployment, oid: str) -> None:
    doc = order_doc(order_id=oid)
    first = shared.client.place_order(doc)
    second = shared.client.place_order(json.dumps(doc))
    assert first.id == second.id == oid
    first.result(timeout=30)
    shared.client.place_order(doc)  # again after completion: still the same order
    assert shared.ledger(oid)["charge_calls"] == "1"
    assert [e.type for e in first.history()].count("order_placed") == 1
    changed = order_doc(("Yoga Mat", "29.90", 1), order_id=oid)
    with pytest.raises(OrderConflict, match=oid):
        shared.client.place_order(changed)


def test_redelivered_step_returns_the_recorded_result(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()
    d.start_worker(concurrency=1)  # one process: messages are handled in the order sent
    handle = d.client.place_order(order_doc(order_id=oid))
    handle.result(timeout=30)
    before = d.ledger(oid)
    # Deliver every step's task again, as a duplicated message would.
    for name in ("process_payment", "reserve_inventory", "deliver_order"):
        d.client.app.signature(
            f"fulfillment.{name}", args=(oid,), kwargs={"epoch": 1}, immutable=True
        ).apply_async(queue=d.settings.queue)
    marker = d.client.place_order(order_doc())  # handled after the duplicates
    marker.result(timeout=30)
    assert d.ledger(oid) == before
    assert handle.view().status is OrderStatus.COMPLETED
    assert [e.type for e in handle.history()].count("attempt_started") == 3

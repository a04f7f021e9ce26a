"""Approval: approve, early approve, reject, timeout, cancel, and decisions that come too late."""

from __future__ import annotations

import time

import pytest

from fulfillment.orders.errors import DecisionError, OrderCancelled, OrderFailed, OrderNotFound
from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, Deployment, order_doc


def expensive(oid: str):  # type: ignore[no-untyped-def]
    return order_doc(EXPENSIVE, order_id=oid)


def decisions(d: Deployment, oid: str) -> list[str]:
    return [
        e.type
        for e in d.client.history(oid)
        if e.type in ("approval_decided", "approval_timed_out", "order_cancelled")
    ]


def test_order_over_threshold_waits_and_approve_resumes_it(shared: Deployment, oid: str) -> None:
    handle = shared.client.place_order(expensive(oid))
    view = shared.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    assert view.approval.required and view.approval.deadline is not None
    assert all(s.attempts == 0 for s in view.steps if s.name != "approval")
    approved = shared.client.approve_order(oid, by="alice")
    assert approved.approval.decision == "approved" and approved.approval.by == "alice"
    assert handle.result(timeout=30).startswith("Order fulfilled: Payment processed for 1 item,")
    types = [e.type for e in handle.history()]
    assert types.index("approval_requested") < types.index("approval_decided")
    assert types.index("approval_decided") < types.index("attempt_started")


def test_order_at_threshold_needs_no_approval(shared: Deployment, oid: str) -> None:
    doc = order_doc(("Electric Cargo Bike", "5000.00", 2), order_id=oid)  # exactly 10000
    assert shared.client.place_order(doc).result(timeout=30).startswith("Order fulfilled")
    with pytest.raises(DecisionError, match="already completed"):
        shared.client.approve_order(oid)


def test_approval_sent_before_the_wait_still_counts(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()
    handle = d.client.place_order(expensive(oid))  # no worker yet: the order cannot reach the wait
    assert handle.status() is OrderStatus.PENDING
    d.client.approve_order(oid, by="early-bird")
    d.start_worker()
    assert handle.result(timeout=30).startswith("Order fulfilled")
    assert decisions(d, oid) == ["approval_decided"]
    assert handle.view().approval.by == "early-bird"


def test_reject_fails_the_order_with_the_reason(shared: Deployment, oid: str) -> None:
    handle = shared.client.place_order(expensive(oid))
    shared.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    shared.client.reject_order(oid, reason="budget frozen", by="bob")
    with pytest.raises(OrderFailed) as info:
        handle.result(timeout=30)
    assert (info.value.type, info.value.message) == ("ApprovalRejected", "budget frozen")
    view = handle.view()
    assert view.approval.reason == "budget frozen" and view.approval.by == "bob"
    assert "charge_calls" not in shared.ledger(oid)
    with pytest.raises(DecisionError, match="already failed"):
        shared.client.approve_order(oid)


def test_approval_times_out_and_a_late_approve_is_refused(shared: Deployment, oid: str) -> None:
    handle = shared.client.place_order(expensive(oid), approval_timeout=1)
    with pytest.raises(OrderFailed) as info:
        handle.result(timeout=30)
    assert (info.value.type, info.value.message) == ("ApprovalTimeout", "Approval timed out")
    view = handle.view()
    deadline = view.approval.deadline
    assert deadline is not None and view.finished_at is not None
    assert 0 <= (view.finished_at - deadline).total_seconds() < 2
    with pytest.raises(DecisionError, match="already failed"):
        shared.client.approve_order(oid)
    assert decisions(shared, oid) == ["approval_timed_out"]


def test_second_decision_gets_a_clear_error(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()  # no worker: the approved order stays pending, undecided no more
    d.client.place_order(expensive(oid))
    d.client.approve_order(oid, by="alice")
    with pytest.raises(DecisionError, match=r"already decided \(approved by alice\)"):
        d.client.reject_order(oid, reason="too late")
    with pytest.raises(DecisionError, match="already decided"):
        d.client.approve_order(oid)


def test_decisions_on_orders_without_approval_or_unknown(shared: Deployment, oid: str) -> None:
    with pytest.raises(OrderNotFound, match="no-such-order"):
        shared.client.approve_order("no-such-order")
    with pytest.raises(OrderNotFound):
        shared.client.cancel_order("no-such-order")
    shared.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    with pytest.raises(DecisionError, match="already completed"):
        shared.client.reject_order(oid)
    with pytest.raises(DecisionError, match="already completed"):
        shared.client.cancel_order(oid)


def test_cancel_pending_and_waiting_orders(deploy, shared: Deployment, oid: str) -> None:  # type: ignore[no-untyped-def]
    idle = deploy()
    pending = idle.client.place_order(order_doc(order_id=oid))
    idle.client.cancel_order(oid, reason="duplicate order")
    with pytest.raises(OrderCancelled) as info:
        pending.result(timeout=5)
    assert info.value.message == "duplicate order"
    idle.start_worker()  # the message already sent for it finds a cancelled order
    marker = idle.client.place_order(order_doc())
    marker.result(timeout=30)
    assert "charge_calls" not in idle.ledger(oid)

    waiting = shared.client.place_order(expensive(oid + "-w"))
    shared.wait_status(waiting.id, OrderStatus.AWAITING_APPROVAL)
    shared.client.cancel_order(waiting.id)
    assert shared.wait(waiting.id).status is OrderStatus.CANCELLED
    with pytest.raises(DecisionError, match="already cancelled"):
        shared.client.approve_order(waiting.id)


def test_concurrent_decisions_have_one_winner(shared: Deployment, oid: str) -> None:
    """A quick version of the race; the 500-trial stress test lives in the hardening tests."""
    from concurrent.futures import ThreadPoolExecutor

    for trial in range(10):
        order_id = f"{oid}-{trial}"
        shared.client.place_order(expensive(order_id), approval_timeout=0.3)
        shared.wait_status(order_id, OrderStatus.AWAITING_APPROVAL)
        time.sleep(0.25)  # land the decisions right at the deadline, against the timeout

        def decide(kind: str, order_id: str = order_id) -> str:
            try:
                getattr(shared.client, f"{kind}_order")(order_id)
                return kind
            except DecisionError:
                return "refused"

        with ThreadPoolExecutor(3) as pool:
            outcomes = list(pool.map(decide, ["approve", "reject", "cancel"]))
        view = shared.wait(order_id)
        assert len(decisions(shared, order_id)) == 1, (outcomes, decisions(shared, order_id))
        winners = [o for o in outcomes if o != "refused"]
        assert len(winners) <= 1
        if not winners:
            assert view.failure is not None and view.failure.type == "ApprovalTimeout"

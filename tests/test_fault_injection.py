"""Regression tests for the durability holes fault injection found (issue "1/4").

Each test names the violation it guards against; each failed on b370c27.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from fulfillment.orders.errors import OrderCancelled
from fulfillment.orders.state import OrderStatus

from .servers import OwnServer
from .support import (
    EXPENSIVE,
    Deployment,
    assert_no_redrive_with_one_busy_worker,
    freeze_worker_running,
    order_doc,
    start_workers,
    wait_until,
)

pytestmark = pytest.mark.slow

EFFECT = {"payment": "charge", "inventory": "reservation", "delivery": "shipment"}
UNDONE = {"payment": "refund", "inventory": "release", "delivery": "shipment_cancelled"}
STEPS = ("payment", "inventory", "delivery")
UNDO = {"payment": "refund_payment", "inventory": "release_inventory",
        "delivery": "cancel_shipment"}  # fmt: skip


# --- 1. an accepted cancel during the last step wins ---------------------------------------


def test_cancel_accepted_during_the_last_step_wins(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(
        FULFILLMENT_SERVICE_LATENCY="0.6",
        FULFILLMENT_SERVICE_LATENCY_JITTER="0",
        FULFILLMENT_STEP_TIME_LIMIT="3",
    )
    d.start_worker()
    handle = d.client.place_order(order_doc(order_id=oid))
    wait_until(
        lambda: (r := d.client.store.record(oid)).get("step") == "delivery"
        and r.get("phase") == "running",
        30, "delivery to be running",
    )  # fmt: skip
    accepted = d.client.cancel_order(oid, reason="changed my mind")
    assert accepted.status is OrderStatus.RUNNING  # the running step finishes first
    with pytest.raises(OrderCancelled) as info:
        handle.result(timeout=30)
    assert info.value.message == "changed my mind"
    view = d.wait(oid)
    assert view.status is OrderStatus.CANCELLED
    assert {c.action: c.state for c in view.compensations} == {
        "cancel_shipment": "done",
        "release_inventory": "done",
        "refund_payment": "done",
    }
    ledger = d.ledger(oid)
    for step in STEPS:
        assert EFFECT[step] in ledger and UNDONE[step] in ledger, (step, ledger)


# --- 2. a presumed-dead attempt that wakes up cannot act ----------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_a_paused_attempt_cannot_act_after_its_order_was_cancelled(
    deploy, oid: str, step: str
) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(
        FULFILLMENT_SERVICE_LATENCY="1.5",
        FULFILLMENT_SERVICE_LATENCY_JITTER="0",
        FULFILLMENT_STEP_TIME_LIMIT="5",
    )
    start_workers(d, 2)
    d.client.place_order(order_doc(order_id=oid))
    # frozen inside the service call's latency, before the service script runs
    victim = wait_until(lambda: freeze_worker_running(d, oid, step), 30, f"{step} running")
    try:
        d.client.cancel_order(oid, reason="customer left")
        # the other worker's watchdog presumes the paused one dead (its heartbeat stopped)
        wait_until(lambda: "attempt_lost" in [e.type for e in d.client.history(oid)], 20,
                   "the paused attempt to be presumed lost")  # fmt: skip
    finally:
        victim.resume()  # before its 5 s time limit: it goes on to call the service
    wait_until(lambda: d.ledger(oid).get("refused_calls") == "1", 20, "the late call refused")
    d.wait_status(oid, OrderStatus.CANCELLED, timeout=30)
    view = d.wait(oid, timeout=30)
    assert view.status is OrderStatus.CANCELLED
    ledger = d.ledger(oid)
    assert EFFECT[step] not in ledger, ledger
    for earlier in STEPS[: STEPS.index(step)]:
        assert EFFECT[earlier] in ledger and UNDONE[earlier] in ledger, (earlier, ledger)
    # The undo of the paused step did not settle while that attempt could still act.
    record = d.client.store.record(oid)
    (done,) = [e for e in d.client.history(oid) if e.type == "compensated"
               and e.data["action"] == UNDO[step]]  # fmt: skip
    assert done.at.timestamp() * 1e6 >= int(record[f"s:{step}:fence_until"]) - 1000


# --- 3. forged or duplicated compensation messages change nothing -------------------------------


def test_forged_compensation_messages_change_nothing(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(concurrency=1)  # one process: the queue is consumed in order
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    before = d.ledger(oid)
    for action in UNDO.values():
        task = f"fulfillment.{action}"
        for target in (oid, oid, "no-such-order"):  # twice: a duplicate, too
            d.client.app.send_task(task, args=(target,), queue=d.settings.queue)
    # consumed after every forged message, by the only process there is
    d.client.place_order(order_doc(order_id=oid + "-marker")).result(timeout=30)
    assert d.client.get_order(oid).status is OrderStatus.COMPLETED
    assert d.ledger(oid) == before
    assert [k for k in d.redis.scan_iter("*no-such-order*")] == []


# --- 4. compensation messages stay bounded under a backlog ----------------------------------


def test_compensations_under_a_backlog_are_sent_once(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(
        FULFILLMENT_SERVICE_LATENCY="0.02",
        FULFILLMENT_SERVICE_LATENCY_JITTER="0",
        FULFILLMENT_COMPENSATION_GRACE="0.5",
    )
    d.start_worker(concurrency=1)
    ids = [f"backlog-{i:03d}" for i in range(150)]
    for order_id in ids:  # each fails after payment: one refund each
        d.client.place_order(order_doc(("Moon Rock", "5.00", 1), order_id=order_id))
    longest = 0
    deadline = time.monotonic() + 180
    while not all(v.settled for v in map(d.client.get_order, ids)):
        longest = max(longest, d.redis.llen(d.settings.queue))
        assert time.monotonic() < deadline, "orders did not settle"
        time.sleep(0.2)
    refunds = [int(d.ledger(i).get("refund_calls", 0)) for i in ids]
    assert refunds == [1] * len(ids), "each refund ran exactly once"
    assert longest <= 2 * len(ids), longest
    resent = [e for i in ids for e in d.client.history(i) if e.type == "compensation_resent"]
    assert resent == []


# --- 5. no false "retry message lost" re-drives -----------------------------------------------


def test_no_redrive_when_no_worker_dies(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(
        FULFILLMENT_SERVICE_LATENCY="0.05", FULFILLMENT_SERVICE_LATENCY_JITTER="0"
    )
    assert_no_redrive_with_one_busy_worker(d)


# --- 6. a worker survives Redis stopping, however it stops ---------------------------------------


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_worker_survives_redis_stopping(tmp_path: Path, how: str) -> None:
    with OwnServer(tmp_path / "redis", fsync="always") as server:
        d = Deployment(server.url, tmp_path / "dep")
        try:
            worker = d.start_worker()
            waiting = d.client.place_order(order_doc(EXPENSIVE), approval_timeout=30)
            d.wait_status(waiting.id, OrderStatus.AWAITING_APPROVAL)  # its countdown is held
            assert d.client.place_order(order_doc()).result(timeout=30).startswith("Order")
            server.shutdown() if how == "shutdown" else server.kill()
            wait_until(
                lambda: "Connection to broker lost" in worker.log.read_text(), 30,
                "the worker to notice",
            )  # fmt: skip
            server.start()
            assert worker.alive()
            after = d.client.place_order(order_doc())
            assert after.result(timeout=60).startswith("Order fulfilled")
            d.client.approve_order(waiting.id, by="ops")
            assert waiting.result(timeout=60).startswith("Order fulfilled")
            assert worker.alive()
            assert "Unrecoverable error" not in worker.log.read_text()
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(30) == 0
        finally:
            d.close()

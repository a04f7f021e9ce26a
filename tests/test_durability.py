"""Crashes and restarts: SIGKILLed workers, chaos, a Redis restart, a lost countdown task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fulfillment.ops.processes import ProcessGroup, start_server
from fulfillment.orders.keys import STOCK
from fulfillment.orders.settings import load_settings
from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, Deployment, Worker, order_doc, wait_until

pytestmark = pytest.mark.slow


def holder(d: Deployment, order_id: str, step: str) -> Worker | None:
    """The worker whose process runs ``step`` of the order right now, if any."""
    record = d.client.store.record(order_id)
    if record.get("phase") != "running" or record.get("step") != step:
        return None
    pid = int(record["worker"].rsplit(":", 1)[1])
    return next((w for w in d.workers if w.pid == pid and w.alive()), None)


def effects_once(d: Deployment, order_id: str) -> dict[str, str]:
    ledger = d.ledger(order_id)
    assert {"charge", "reservation", "shipment"} <= ledger.keys(), ledger
    assert ledger["charge_calls"] == "1", "payment ran once"
    return ledger


def test_sigkill_mid_step_fails_over_to_another_worker(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_SERVICE_LATENCY="0.6", FULFILLMENT_SERVICE_LATENCY_JITTER="0",
               FULFILLMENT_STEP_TIME_LIMIT="2")  # fmt: skip
    d.start_worker(wait=False)
    d.start_worker(wait=False)
    for w in d.workers:
        d.wait_for_worker(w)
    stock_before = int(d.redis.hget(STOCK, "USB-C Charging Dock"))
    handle = d.client.place_order(order_doc(order_id=oid))
    victim = wait_until(lambda: holder(d, oid, "inventory"), 30, "inventory to be running")
    victim.kill()
    killed_at = time.monotonic()
    assert handle.result(timeout=30).startswith("Order fulfilled")
    took = time.monotonic() - killed_at
    print(f"kill -> completed: {took:.2f} s")
    effects_once(d, oid)
    assert stock_before - int(d.redis.hget(STOCK, "USB-C Charging Dock")) == 2
    inventory = d.client.timeline(oid).steps[1].attempts
    assert [a.outcome for a in inventory][-1] == "succeeded"
    assert inventory[0].outcome == "lost" and inventory[-1].worker != inventory[0].worker
    payment = d.client.timeline(oid).steps[0].attempts
    assert len(payment) == 1, "completed steps are never re-run"
    assert "attempt_lost" in [e.type for e in handle.history()]


def test_late_result_of_a_presumed_dead_attempt_is_discarded(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    """The main process dies but its pool child finishes the step after the re-drive."""
    d = deploy(FULFILLMENT_SERVICE_LATENCY="1.5", FULFILLMENT_SERVICE_LATENCY_JITTER="0",
               FULFILLMENT_STEP_TIME_LIMIT="3")  # fmt: skip
    first = d.start_worker()
    handle = d.client.place_order(order_doc(order_id=oid))
    wait_until(lambda: holder(d, oid, "payment"), 30, "payment to be running")
    first.kill()  # the orphaned child keeps running its payment call
    d.start_worker()
    assert handle.result(timeout=60).startswith("Order fulfilled")
    first.destroy()
    events = handle.history()
    types = [e.type for e in events]
    assert "attempt_lost" in types
    assert d.ledger(oid)["charge_calls"] in ("1", "2")  # a replay at most, never a 2nd charge
    charge = json.loads(d.ledger(oid)["charge"])
    assert charge["amount"] == "497.99"
    # The orphan either finished before the re-drive (then the re-run found the step
    # done) or after it (then its result was discarded and recorded as such).
    payment = d.client.timeline(oid).steps[0]
    assert payment.state == "completed"


def test_redis_restart_mid_run(deploy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    group = ProcessGroup()
    data = tmp_path / "own-server"
    settings = load_settings(data_dir=data)
    try:
        url = start_server(group, settings)
        d = Deployment(url, tmp_path / "dep", FULFILLMENT_SERVICE_LATENCY="0.2")
        try:
            d.start_worker(wait=False)
            d.start_worker(wait=False)
            for w in d.workers:
                d.wait_for_worker(w)
            ids = [d.client.place_order(order_doc()).id for _ in range(20)]
            wait_until(
                lambda: sum(d.client.get_order(i).status.finished for i in ids) >= 3,
                30, "a few orders to finish",
            )  # fmt: skip
            unfinished = sum(not d.client.get_order(i).status.finished for i in ids)
            assert unfinished > 0, "restart must happen mid-run"
            group.stop(timeout=10)  # SIGTERM: valkey writes its append-only file and exits
            d.redis.connection_pool.disconnect()
            time.sleep(1.0)  # Redis is down for a second
            assert start_server(group, settings).rsplit(":", 1)[1] == url.rsplit(":", 1)[1]
            for order_id in ids:
                d.wait(order_id, timeout=90)
                assert d.client.get_order(order_id).status is OrderStatus.COMPLETED
                effects_once(d, order_id)
            assert all(w.alive() for w in d.workers), "workers reconnected, none died"
        finally:
            d.close()
    finally:
        group.stop(timeout=10)


def test_lost_countdown_still_times_out(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()
    d.start_worker(wait=False)
    d.start_worker(wait=False)
    for w in d.workers:
        d.wait_for_worker(w)
    handle = d.client.place_order(order_doc(EXPENSIVE, order_id=oid), approval_timeout=3)
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)

    def countdown_holder() -> Worker | None:
        scheduled = d.client.app.control.inspect(timeout=1).scheduled() or {}
        for node, entries in scheduled.items():
            if any(oid in json.dumps(e) for e in entries):
                return next(
                    w for w in d.workers if node == w.name.replace("%h", node.split("@")[1])
                )
        return None

    victim = wait_until(countdown_holder, 10, "the worker holding the countdown task")
    victim.destroy()
    with pytest.raises(Exception) as info:
        handle.result(timeout=30)
    assert getattr(info.value, "type", None) == "ApprovalTimeout"
    view = handle.view()
    assert view.finished_at is not None and view.approval.deadline is not None
    late = (view.finished_at - view.approval.deadline).total_seconds()
    print(f"timed out {late:.2f} s after the deadline")
    assert 0 <= late < 2.5
    # The dead worker's countdown message is put back in the queue once the watchdog knows
    # the worker is gone, so either it or the watchdog (past the deadline) times the wait
    # out: exactly one of them.
    sources = [e.data.get("source") for e in handle.history() if e.type == "approval_timed_out"]
    assert sources in (["watchdog"], ["countdown task"]), sources

"""Retention of finished orders, and graceful shutdown of a worker mid-step."""

from __future__ import annotations

import signal

from fulfillment.orders.services import set_fault
from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, Deployment, Worker, order_doc, wait_until


def run_keys(d: Deployment, order_id: str) -> list[str]:
    k = d.client.store.space.run(order_id)
    return [k.record, k.history, k.companion("ledger"), k.settled]


def keys_of(d: Deployment, order_id: str) -> list[str]:
    return [key for key in run_keys(d, order_id) if d.redis.exists(key)]


def test_finished_orders_expire_running_and_waiting_never(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(FULFILLMENT_RETENTION="2")
    d.start_worker()
    done = d.client.place_order(order_doc(order_id=oid + "-done"))
    refunded = d.client.place_order(order_doc(("Moon Rock", "9.00", 1), order_id=oid + "-ref"))
    waiting = d.client.place_order(
        order_doc(EXPENSIVE, order_id=oid + "-wait"), approval_timeout=600
    )
    set_fault(d.redis, "inventory", attempts=None, order_id=oid + "-stuck")
    stuck = d.client.place_order(order_doc(order_id=oid + "-stuck"))
    done.result(timeout=30)
    d.wait(refunded.id)
    d.wait_status(waiting.id, OrderStatus.AWAITING_APPROVAL)
    d.client.wait_for(stuck.id, lambda v: v.steps[1].attempts >= 2, 30)

    for finished in (done.id, refunded.id):
        assert set(keys_of(d, finished)) == set(run_keys(d, finished))
        assert all(0 < d.redis.ttl(k) <= 2 for k in keys_of(d, finished))
    for live in (waiting.id, stuck.id):
        assert all(d.redis.ttl(k) == -1 for k in keys_of(d, live)), "never expire while live"

    wait_until(lambda: not keys_of(d, done.id) and not keys_of(d, refunded.id), 10,
               "finished orders, their history and ledgers to expire")  # fmt: skip
    # the watchdog prunes them from the status indexes too
    wait_until(
        lambda: d.redis.zscore(d.client.store.space.status_index("completed"), done.id) is None
        and d.redis.zscore(d.client.store.space.status_index("failed"), refunded.id) is None,
        20, "the index entries to be pruned",
    )  # fmt: skip
    assert d.client.get_order(waiting.id).status is OrderStatus.AWAITING_APPROVAL
    assert d.client.get_order(stuck.id).status is OrderStatus.RUNNING
    assert all(d.redis.ttl(k) == -1 for k in keys_of(d, stuck.id))
    ids = {v.id for v in d.client.list_orders(limit=100)}
    assert ids == {waiting.id, stuck.id}
    out = d.cli("show", done.id)
    assert out.returncode == 1 and "not found" in out.stderr


def test_sigterm_mid_step_finishes_or_hands_back(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    # A worker is presumed dead only after 10 s here: the freeze below must not fail it over.
    d: Deployment = deploy(
        FULFILLMENT_SERVICE_LATENCY="0.8",
        FULFILLMENT_SERVICE_LATENCY_JITTER="0",
        FULFILLMENT_STEP_TIME_LIMIT="3",
        FULFILLMENT_WORKER_DEAD_AFTER="10",
    )
    d.start_worker(wait=False)
    d.start_worker(wait=False)
    for w in d.workers:
        d.wait_for_worker(w)
    handle = d.client.place_order(order_doc(order_id=oid))

    def frozen_mid_step() -> tuple[Worker, str] | None:
        """Freeze the worker running a step; keep it frozen only if the step still runs there."""
        record = d.client.store.record(oid)
        if record.get("phase") != "running" or record.get("step") == "delivery":
            return None  # only a step with steps after it tells "finishes or hands back"
        pid = int(record["worker"].rsplit(":", 1)[1])
        worker = next(w for w in d.workers if w.pid == pid)
        worker.pause()
        again = d.client.store.record(oid)
        same = ("phase", "step", "worker", "task_id")
        if all(again.get(k) == record.get(k) for k in same):
            return worker, record["step"]
        worker.resume()
        return None

    leaving, step = wait_until(frozen_mid_step, 30, "a step running, frozen on its worker")
    (staying,) = [w for w in d.workers if w is not leaving]
    leaving.proc.send_signal(signal.SIGTERM)  # warm shutdown, handled as soon as it resumes
    leaving.resume()
    assert leaving.proc.wait(30) == 0
    assert handle.result(timeout=60).startswith("Order fulfilled")
    tl = d.client.timeline(oid)
    interrupted = next(s for s in tl.steps if s.name == step)
    # the step the worker was running finished there, or was handed back and run elsewhere
    assert interrupted.attempts[-1].outcome == "succeeded"
    assert all(a.outcome in ("succeeded", "lost") for a in interrupted.attempts)
    later = [s for s in tl.steps if tl.steps.index(s) > tl.steps.index(interrupted)]
    assert all(a.worker.endswith(f":{staying.pid}") for s in later for a in s.attempts)
    ledger = d.ledger(oid)
    assert ledger["charge_calls"] == "1"
    assert {"charge", "reservation", "shipment"} <= ledger.keys()
    assert staying.alive()

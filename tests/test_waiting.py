"""Waiting for an order: the doorbell wakes every waiter once, when the order is settled."""

from __future__ import annotations

import json
import threading

import pytest

from fulfillment.orders.errors import OrderNotFound, ResultTimeout

from .support import Deployment, order_doc


def test_every_waiter_wakes_and_a_late_one_returns_at_once(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    handle = d.client.place_order(order_doc(order_id=oid))  # no worker yet: it waits
    results: list[str] = []
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            results.append(handle.result(timeout=60))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    d.start_worker()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 3
    assert all(r.startswith("Order fulfilled: ") for r in results)

    bell = d.client.store.space.run(oid).settled
    (rung,) = d.redis.lrange(bell, 0, -1)  # rung once, and it stays rung
    assert json.loads(rung) == {"status": "completed", "result": results[0]}
    assert d.client.store.wait_settled(oid, 0.01) == json.loads(rung), "a late waiter finds it"
    assert handle.result(timeout=5) == results[0]
    assert d.redis.lrange(bell, 0, -1) == [rung]
    assert 0 < d.redis.ttl(bell) <= d.settings.retention


def test_waiting_on_an_unknown_or_stuck_order_fails_clearly(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()  # no worker: nothing moves
    with pytest.raises(OrderNotFound, match="no-such-order"):
        d.client.wait("no-such-order", timeout=30)
    with pytest.raises(OrderNotFound, match="no-such-order"):
        d.client.wait_settled("no-such-order")  # no timeout: still refused at once
    handle = d.client.place_order(order_doc())
    with pytest.raises(ResultTimeout, match=r"not finished after 0.3s \(status pending\)"):
        handle.result(timeout=0.3)

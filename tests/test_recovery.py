"""Recovery after a worker dies is as fast with a backlog as without one.

A worker SIGKILLed with a backlog in the queue: every step it had in hand (running,
prefetched, or held for a countdown) is sent again under a new epoch once the watchdog
knows the worker is gone or the step's message is found missing (not held by a live
worker, and not in the queue, which the watchdog looks through), not after the backlog
drained or kombu's visibility timeout (an hour). The transport keeps no copy of a
delivered message (no acknowledgement emulation), so nothing of the dead worker comes
back late either. On RabbitMQ the broker itself hands a dead connection's messages on
(tests/test_rabbitmq.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fulfillment.orders.state import OrderStatus

from .support import Deployment, order_doc, start_workers, wait_until

pytestmark = pytest.mark.slow


def test_a_dead_workers_steps_are_sent_again_at_once_behind_a_backlog(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(FULFILLMENT_SERVICE_LATENCY="0.05")
    victim, _other = start_workers(d, 2, concurrency=2)
    ids = [d.client.place_order(order_doc()).id for _ in range(200)]
    wait_until(lambda: d.queue_length() < 190, 30, "the workers to be busy")
    victim.destroy()  # the whole worker, as a lost machine
    killed = datetime.now(UTC)
    assert d.queue_length() > 50, "a backlog waits behind what it held"
    d.start_worker(concurrency=2, wait=False)
    d.wait_all_settled(ids, 120)

    s = d.settings
    bound = max(s.worker_dead_after, s.queue_grace) + 4 * s.watchdog_interval
    redriven = [
        (e.at - killed).total_seconds()
        for order_id in ids
        for e in d.client.history(order_id)
        if e.type == "redriven" and e.at >= killed
    ]
    assert redriven, "the victim died with steps in hand, and they were sent again"
    print(
        f"\n{len(redriven)} step(s) of the dead worker sent again {min(redriven):.2f}-"
        f"{max(redriven):.2f} s after the kill (bound {bound:g} s), behind a backlog"
    )
    assert max(redriven) < bound + 1.5, "slack for a loaded machine"
    assert all(d.client.get_order(i).status is OrderStatus.COMPLETED for i in ids)
    for order_id in ids:
        effects = [d.ledger(order_id).get(f"{e}_effects") for e in ("charge", "reserve", "ship")]
        assert effects == ["1", "1", "1"], (order_id, d.ledger(order_id))
    assert not d.redis.exists("unacked"), "the transport keeps no copy of delivered messages"

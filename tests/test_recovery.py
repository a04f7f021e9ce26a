"""Recovery after a worker dies is as fast with a backlog as without one.

A worker SIGKILLed with a backlog in the queue: the messages the Redis transport had
delivered to it (running, prefetched, or held for a countdown) go back to the front of
their queue once the watchdog knows the worker is gone (FULFILLMENT_WORKER_DEAD_AFTER
and a heartbeat or two), not after kombu's visibility timeout (an hour), and kombu's
unacknowledged-message hash keeps none of them. On RabbitMQ the broker itself hands a
dead connection's messages on (tests/test_rabbitmq.py).
"""

from __future__ import annotations

import os
import time

import pytest

from fulfillment.engine.keys import SharedKeys
from fulfillment.orders.state import OrderStatus

from .support import Deployment, order_doc, start_workers, wait_until

pytestmark = pytest.mark.slow


def test_a_dead_workers_messages_come_back_at_once_behind_a_backlog(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(FULFILLMENT_SERVICE_LATENCY="0.05")
    victim, _other = start_workers(d, 2, concurrency=2)
    ids = [d.client.place_order(order_doc()).id for _ in range(200)]
    held_key = SharedKeys().held(victim.name.replace("%h", os.uname().nodename))

    def victims_tags() -> list[str]:
        keys = [k for k in d.redis.scan_iter(SharedKeys().held("*")) if k.startswith(held_key)]
        return [t[2:] for k in keys for t in d.redis.smembers(k) if t.startswith("t:")]

    def unacknowledged() -> list[str]:
        return [t for t in victims_tags() if d.redis.hexists("unacked", t)]

    tags = wait_until(unacknowledged, 30, "the victim to hold unacknowledged messages")
    victim.destroy()  # the whole worker, as a lost machine
    assert d.queue_length() > 50, "a backlog waits behind them"
    killed = time.monotonic()
    d.start_worker(concurrency=2, wait=False)
    wait_until(lambda: not any(d.redis.hexists("unacked", t) for t in tags), 30,
               "the dead worker's messages to go back to the queue")  # fmt: skip
    back = time.monotonic() - killed
    bound = d.settings.worker_dead_after + 4 * d.settings.watchdog_interval
    print(f"\n{len(tags)} message(s) of the dead worker back in the queue {back:.2f} s after the "
          f"kill (bound {bound:g} s), {d.queue_length()} queued")  # fmt: skip
    assert back < bound + 1.5, "slack for a loaded machine"
    d.wait_all_settled(ids, 120)
    assert all(d.client.get_order(i).status is OrderStatus.COMPLETED for i in ids)
    for order_id in ids:
        effects = [d.ledger(order_id).get(f"{e}_effects") for e in ("charge", "reserve", "ship")]
        assert effects == ["1", "1", "1"], (order_id, d.ledger(order_id))
    wait_until(lambda: d.redis.hlen("unacked") == 0, 30, "nothing left unacknowledged")
    restored = [ln for w in d.workers for ln in w.log.read_text().splitlines() if "put back" in ln]
    assert restored, "the watchdog put the dead worker's messages back"

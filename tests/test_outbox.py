"""The outbox: a step's successor is sent by the same script that records the step.

Against the real embedded server and real Celery message building; the scripts'
contract (push only with the transition, never on a replay or a stale result)
is checked on the order store directly, the whole path with live workers.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from fulfillment.engine import create_app, register
from fulfillment.engine.delivery import Delivery
from fulfillment.engine.replies import Kind, Moved
from fulfillment.engine.transport import HeldPush, OutboxError, outbox, transport_for
from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.errors import OrderConflict
from fulfillment.orders.state import OrderStatus
from fulfillment.orders.workflow import order_workflow

from .support import Deployment, order_doc

TEST_QUEUE = "outbox-test"


def queued_messages(d: Deployment, key: str | None = None) -> list[dict[str, Any]]:
    """The messages waiting in a queue list, oldest first, decoded."""
    raw = d.redis.lrange(key or d.settings.queue, 0, -1)
    return [json.loads(m) for m in reversed(raw)]


def task_name(message: dict[str, Any]) -> str:
    return message["headers"]["task"]


def test_placing_an_order_stores_it_and_queues_its_first_step_in_one_step(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()  # no worker: the message stays in the queue
    assert d.client._holds_messages
    doc = order_doc(order_id=oid)
    d.client.place_order(doc)
    (message,) = queued_messages(d)
    assert task_name(message) == "fulfillment.process_payment"
    assert message["headers"]["argsrepr"] == repr((oid,))
    assert "4111" not in json.dumps(message), "the card never travels through the broker"
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([oid], {"epoch": 1})
    assert not embed.get("chain"), (
        "one message per step: the next is sent when this one is recorded"
    )
    assert d.client.get_order(oid).status is OrderStatus.PENDING

    d.client.place_order(doc)  # idempotent: no second message
    try:
        d.client.place_order(order_doc(("Yoga Mat", "29.90", 1), order_id=oid))
    except OrderConflict:
        pass
    else:  # pragma: no cover
        raise AssertionError("a different order under the same id must be refused")
    assert len(queued_messages(d)) == 1


def test_complete_pushes_the_next_message_only_when_it_moves_the_order_on(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    store = d.client.store
    d.client.place_order(order_doc(order_id=oid))
    outbox = [HeldPush(TEST_QUEUE, "next-after-payment")]

    assert store.begin(oid, "payment", 1, "task-p", "w:1").kind is Kind.RUN
    out = store.complete(oid, "payment", 1, 1, "Payment processed", outbox=outbox,
                         outbox_step="inventory")  # fmt: skip
    assert isinstance(out, Moved) and (out.step, out.dispatch) == ("inventory", False)
    assert d.redis.lrange(TEST_QUEUE, 0, -1) == ["next-after-payment"]

    # the same call again (its reply was lost): answered as before, nothing sent twice
    replay = store.complete(oid, "payment", 1, 1, "Payment processed", outbox=outbox,
                            outbox_step="inventory")  # fmt: skip
    assert isinstance(replay, Moved) and replay.replay is True
    assert d.redis.llen(TEST_QUEUE) == 1

    # a result from an attempt that is no longer the live one sends nothing
    assert store.begin(oid, "inventory", 1, "task-i", "w:1").kind is Kind.RUN
    stale = store.complete(oid, "inventory", 1, 7, "late", outbox=[HeldPush(TEST_QUEUE, "stale")],
                           outbox_step="delivery")  # fmt: skip
    assert stale.kind is Kind.STALE
    assert d.redis.llen(TEST_QUEUE) == 1

    # cancelled while the step ran: the step is recorded, the order does not move on
    assert d.client.cancel_order(oid).status is OrderStatus.RUNNING
    out = store.complete(oid, "inventory", 1, 1, "Inventory reserved",
                         outbox=[HeldPush(TEST_QUEUE, "x")], outbox_step="delivery")  # fmt: skip
    assert out.kind is Kind.CANCELLED
    assert d.redis.llen(TEST_QUEUE) == 1


def test_the_next_step_message_names_its_parent_and_root(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    delivery = Delivery(d.client.runtime)
    request = SimpleNamespace(id="task-of-payment", root_id="root")  # the running task's
    held = delivery.hold(delivery.step_message(oid, "inventory", 3, {"items": 2}), request)
    assert d.redis.llen(d.settings.queue) == 0, "held back, not sent"
    assert held is not None
    (push,) = held
    assert push.key == d.settings.queue and push.expire_keys == ()
    message = json.loads(push.message)
    headers = message["headers"]
    assert headers["task"] == "fulfillment.reserve_inventory"
    assert headers["id"] == f"{oid}:inventory:3"
    assert (headers["parent_id"], headers["root_id"]) == ("task-of-payment", "root")
    assert headers["kwargsrepr"] == repr({"epoch": 3, "items": 2})
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([oid], {"epoch": 3})
    assert not embed.get("chain")


def test_separate_broker_sends_messages_itself(deploy, server, oid: str) -> None:  # type: ignore[no-untyped-def]
    """With FULFILLMENT_BROKER_URL on another database, nothing is held back."""
    broker_db = server.acquire()
    d: Deployment = deploy(FULFILLMENT_BROKER_URL=f"{server.url}/{broker_db}")
    try:
        assert not d.client._holds_messages
        d.start_worker(concurrency=2)
        handles = [d.client.place_order(order_doc(order_id=f"{oid}-{i}")) for i in range(3)]
        for handle in handles:
            assert handle.result(timeout=30).startswith("Order fulfilled: ")
        assert d.redis.llen(d.settings.queue) == 0
        assert not d.redis.exists(d.settings.queue), "no queue on the order store's database"
        ledger = d.ledger(handles[0].id)
        assert (ledger["charge_calls"], ledger["reserve_calls"], ledger["ship_calls"]) == (
            "1",
            "1",
            "1",
        )
    finally:
        d.close()  # stop the workers before the broker database is handed back
        server.release(broker_db)


def _client_with(d: Deployment, **conf: Any) -> FulfillmentClient:
    """A client whose app has extra Celery settings (a queue with x-expires, a key prefix)."""
    app = create_app("outbox-test", d.settings, set_as_current=False, **conf)
    register(app, order_workflow(d.settings))
    return FulfillmentClient(d.settings, app=app)


def _held_first(client: FulfillmentClient, oid: str) -> list[HeldPush]:
    delivery = Delivery(client.runtime)
    held = delivery.hold(delivery.step_message(oid, "payment", 1, {}))
    assert held is not None
    return held


def test_outbox_keeps_the_expiry_of_a_queue_declared_with_x_expires(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    from kombu import Queue

    # A queue name of its own: kombu caches declared queues by name per connection, and
    # its producer pools are shared by every app of the process on the same broker URL
    # (a database number an earlier test used): a queue "fulfillment" declared there
    # without x-expires would not be declared again.
    d: Deployment = deploy(FULFILLMENT_QUEUE=f"expiring-{oid}")
    client = _client_with(d, task_queues=[Queue(d.settings.queue, expires=60)])  # x-expires
    (push,) = _held_first(client, oid + "-probe")
    assert push.expire_ms == 60_000 and push.key in push.expire_keys
    client.place_order(order_doc(order_id=oid))  # create.lua pushes the held message
    assert d.redis.llen(d.settings.queue) == 1
    assert 0 < d.redis.pttl(d.settings.queue) <= 60_000, "expires as kombu's own _put sets it"


def test_outbox_pushes_under_the_global_key_prefix(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    from kombu import Connection

    d: Deployment = deploy()
    prefix = "tenant-a:"
    client = _client_with(d, broker_transport_options={"global_keyprefix": prefix})
    (push,) = _held_first(client, oid + "-probe")
    assert push.key == prefix + d.settings.queue
    client.place_order(order_doc(order_id=oid))
    assert d.redis.llen(d.settings.queue) == 0, "never under the key no consumer reads"
    # a kombu consumer with the same prefix receives it
    with Connection(
        d.url, transport=transport_for(d.url), transport_options={"global_keyprefix": prefix}
    ) as conn:
        message = conn.SimpleQueue(d.settings.queue, no_ack=True).get(timeout=5)
        assert message.headers["task"] == "fulfillment.process_payment"
        assert message.headers["id"] == f"{oid}:payment:1"


def test_outbox_holds_events_and_refuses_batches(deploy) -> None:  # type: ignore[no-untyped-def]
    from kombu import Connection, Exchange

    d: Deployment = deploy()
    with Connection(d.url, transport=transport_for(d.url)) as conn:
        fanout = Exchange("broadcast-test", type="fanout")
        producer = conn.Producer()
        with outbox() as box:
            producer.publish({"hello": 1}, exchange=fanout, declare=[fanout])
        (push,) = box
        assert push.publish and push.key.endswith("broadcast-test")
        channel = conn.default_channel
        with outbox(), pytest.raises(OutboxError, match="batch"):
            batch = channel.create_publish_batch(10)
            try:
                batch.publish(channel.prepare_message("x"), exchange="", routing_key="q")
            finally:
                batch.close()

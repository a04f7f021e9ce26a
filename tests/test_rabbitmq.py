"""RabbitMQ as the broker, Redis (the embedded server) as the order store.

Every test gets a vhost of its own on the RabbitMQ at 127.0.0.1:5672 (guest/guest),
removed afterwards. Locally the module skips with one line when no broker answers;
in CI (``CI`` set) that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from bench.rabbitmq import HOST, PORT, reachable
from bench.rabbitmq import vhost as own_vhost
from fulfillment.services import set_fault
from fulfillment.state import OrderStatus

from .proxy import Proxy
from .support import (
    EXPENSIVE,
    Deployment,
    assert_no_redrive_with_one_busy_worker,
    order_doc,
    wait_until,
)

if not reachable():
    if os.environ.get("CI"):
        pytest.fail(f"RabbitMQ not reachable on {HOST}:{PORT} (CI must run these tests)",
                    pytrace=False)  # fmt: skip
    pytest.skip(f"RabbitMQ not reachable on {HOST}:{PORT}", allow_module_level=True)


@pytest.fixture
def vhost() -> Iterator[str]:
    """A vhost of this test's own (or, without rabbitmqctl, the default one)."""
    with own_vhost() as name:
        yield name


def amqp(vhost: str, port: int = PORT) -> str:
    return f"amqp://guest:guest@{HOST}:{port}/{vhost}"


@pytest.fixture
def rabbit(deploy, vhost: str) -> Deployment:  # type: ignore[no-untyped-def]
    queue = f"fulfillment-{uuid.uuid4().hex[:8]}"  # a queue of its own even on the default vhost
    return deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_QUEUE=queue)


def test_pipeline_on_rabbitmq(rabbit: Deployment, oid: str) -> None:
    d = rabbit
    d.start_worker(concurrency=2)
    assert not d.client.runtime.engine.holds_messages  # no outbox: the broker is not Redis
    result = d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    assert result.startswith("Order fulfilled: Payment processed for 2 items")
    ledger = d.ledger(oid)
    assert (ledger["charge_effects"], ledger["reserve_effects"], ledger["ship_effects"]) == (
        "1", "1", "1")  # fmt: skip
    # a retry with backoff (a countdown on RabbitMQ) and an approval with its countdown
    retried = f"{oid}-r"
    set_fault(d.redis, "inventory", attempts=2, order_id=retried)
    d.client.place_order(order_doc(order_id=retried)).result(timeout=30)
    assert d.client.get_order(retried).steps[1].attempts == 3
    waiting = f"{oid}-a"
    d.client.place_order(order_doc(EXPENSIVE, order_id=waiting), approval_timeout=1.5)
    view = d.wait(waiting, timeout=30)
    assert view.status is OrderStatus.FAILED and view.failure.type == "ApprovalTimeout"  # type: ignore[union-attr]
    assert "redriven" not in [e.type for e in d.client.history(retried)]


def test_worker_sigkill_fails_over_on_rabbitmq(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_STEP_TIME_LIMIT="30",
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    first, second = d.start_worker(), d.start_worker()
    set_fault(d.redis, "inventory", attempts=1, mode="hang", order_id=oid)
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.current_step == "inventory" and v.phase == "running",
                      30, "inventory to run")  # fmt: skip
    holder = str(d.client.store.record(oid).get("worker"))
    victim, other = (first, second) if holder.startswith(first.name.split("@")[0] + "@") \
        else (second, first)  # fmt: skip
    victim.destroy()  # SIGKILL, main process and pool children
    view = d.wait(oid, timeout=60)
    assert view.status is OrderStatus.COMPLETED, d.explain(oid)
    assert other.alive()
    ledger = d.ledger(oid)
    assert (ledger["charge_effects"], ledger["reserve_effects"], ledger["ship_effects"]) == (
        "1", "1", "1")  # fmt: skip
    types = [e.type for e in d.client.history(oid)]
    assert "attempt_lost" in types, d.explain(oid)


def test_broker_connections_cut_mid_run(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    proxy = Proxy(PORT).start()
    try:
        d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost, proxy.port),
                   FULFILLMENT_SERVICE_LATENCY="0.05",
                   FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
        d.start_worker(concurrency=2)
        ids = [f"{oid}-{i}" for i in range(20)]
        for order_id in ids:
            d.client.place_order(order_doc(order_id=order_id))
        wait_until(lambda: any(d.client.get_order(i).status.finished for i in ids), 30,
                   "some orders to finish")  # fmt: skip
        proxy.reset()  # every broker connection dropped at once (as a broker restart would)
        d.wait_all_settled(ids, 90)
        for order_id in ids:
            assert d.client.get_order(order_id).status is OrderStatus.COMPLETED, d.explain(order_id)
            ledger = d.ledger(order_id)
            assert ledger["charge_effects"] == "1" and ledger["ship_effects"] == "1"
    finally:
        proxy.close()


def test_quorum_queue_with_native_delayed_delivery(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    if not vhost:
        pytest.skip("quorum queues are declared on a vhost of the test's own (needs rabbitmqctl)")
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_QUEUE_TYPE="quorum",
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    d.start_worker(concurrency=2)
    set_fault(d.redis, "inventory", attempts=2, order_id=oid)
    d.client.place_order(order_doc(order_id=oid)).result(timeout=60)
    assert d.client.get_order(oid).steps[1].attempts == 3
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    types = dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())
    assert types[d.settings.queue] == "quorum", types
    # Celery declared its native delayed delivery (the countdowns went through it)
    assert any(name.startswith("celery_delayed_") for name in types), types


def test_no_redrive_under_a_backlog_when_no_worker_dies(deploy, vhost: str) -> None:  # type: ignore[no-untyped-def]
    # The watchdog counts what waits in the RabbitMQ queue (a passive declare) before it
    # takes a queued step's message for lost.
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_SERVICE_LATENCY="0.05",
               FULFILLMENT_SERVICE_LATENCY_JITTER="0",
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    assert_no_redrive_with_one_busy_worker(d)

"""RabbitMQ as the broker, Redis (the embedded server) as the order store.

Every test gets a vhost of its own on the RabbitMQ at 127.0.0.1:5672 (guest/guest),
removed afterwards. Locally the module skips with one line when no broker answers;
in CI (``CI`` set) that is a failure. The broker-restart test SIGKILLs a RabbitMQ
node of its own (``tests.rabbit.OwnNode``), not the machine's. The race and chaos
suites run on RabbitMQ too (``test_races.py``, ``test_chaos.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import kombu
import pytest

from bench.rabbitmq import PORT
from bench.rabbitmq import vhost as own_vhost
from fulfillment.orders.services import set_fault
from fulfillment.orders.state import OrderStatus

from .proxy import Proxy
from .rabbit import OwnNode, amqp, require_broker, require_own_node
from .support import (
    EXPENSIVE,
    Deployment,
    assert_no_redrive_with_one_busy_worker,
    freeze_worker_running,
    order_doc,
    start_workers,
    wait_until,
)

require_broker()


@pytest.fixture
def vhost() -> Iterator[str]:
    """A vhost of this test's own (or, without rabbitmqctl, the default one)."""
    with own_vhost() as name:
        yield name


@pytest.fixture
def rabbit(deploy, vhost: str) -> Deployment:  # type: ignore[no-untyped-def]
    queue = f"fulfillment-{uuid.uuid4().hex[:8]}"  # a queue of its own even on the default vhost
    return deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_QUEUE=queue)


def assert_effects_once(d: Deployment, order_id: str) -> None:
    """One charge, one reservation, one shipment."""
    ledger = d.ledger(order_id)
    effects = tuple(ledger.get(f"{e}_effects") for e in ("charge", "reserve", "ship"))
    assert effects == ("1", "1", "1"), (order_id, ledger)


def test_pipeline_on_rabbitmq(rabbit: Deployment, oid: str) -> None:
    d = rabbit
    d.start_worker(concurrency=2)
    assert not d.client.runtime.engine.holds_messages  # no outbox: the broker is not Redis
    result = d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    assert result.startswith("Order fulfilled: Payment processed for 2 items")
    assert_effects_once(d, oid)
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
    assert_effects_once(d, oid)
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
            assert_effects_once(d, order_id)
    finally:
        proxy.close()


def test_a_half_open_broker_connection_is_ridden_out(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    # The worker's end of every broker connection is cut while the broker's stays open and
    # silent: the broker still holds the old connection (its exclusive queues, its
    # unacknowledged messages) while the worker reconnects. It used to exit with
    # RESOURCE_LOCKED on its mailbox (celery#1963).
    proxy = Proxy(PORT).start()
    try:
        d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost, proxy.port),
                   FULFILLMENT_SERVICE_LATENCY="0.05", FULFILLMENT_BROKER_HEARTBEAT="2",
                   FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
        worker = d.start_worker(concurrency=2)
        ids = [f"{oid}-{i}" for i in range(20)]
        for order_id in ids:
            d.client.place_order(order_doc(order_id=order_id))
        wait_until(lambda: any(d.client.get_order(i).status.finished for i in ids), 30,
                   "some orders to finish")  # fmt: skip
        assert proxy.drop_clients() > 0
        d.wait_all_settled(ids, 90)
        for order_id in ids:
            assert d.client.get_order(order_id).status is OrderStatus.COMPLETED, d.explain(order_id)
            assert_effects_once(d, order_id)
        assert worker.alive(), worker.log.read_text()[-3000:]
        log = worker.log.read_text()
        assert "Unrecoverable" not in log and "RESOURCE_LOCKED" not in log, log[-3000:]
    finally:
        proxy.close()


def test_a_worker_that_dies_before_sending_the_next_step_is_covered(
    deploy, vhost: str, oid: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # Without the outbox the next step's message follows the script that recorded the
    # step. The pool process dies right there: its step's message goes back to the broker
    # (unacknowledged), comes back redelivered, finds its step done, and sends the next
    # step again at once, without waiting for the watchdog's grace.
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_QUEUE_GRACE="30",
               FULFILLMENT_STEP_TIME_LIMIT="5",  # the window is the subject, not the limit
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    marker = tmp_path / "died"
    dies = {"DIE_BEFORE_SENDING": f"{oid}:inventory:1", "DIE_MARKER": str(marker)}
    worker = d.start_worker(concurrency=1, app="tests.dying_app", **dies)
    started = time.monotonic()
    assert d.client.place_order(order_doc(order_id=oid)).result(timeout=60).startswith("Order")
    took = time.monotonic() - started
    assert marker.exists(), "the pool process died before sending inventory's message"
    (resent,) = [e for e in d.client.history(oid) if e.type == "redriven"]
    assert resent.data["step"] == "inventory" and "came back" in resent.data["reason"]
    assert took < d.settings.queue_grace, "it did not wait for the watchdog's grace"
    assert_effects_once(d, oid)
    assert worker.alive()


def test_a_message_the_broker_could_not_take_is_sent_by_the_watchdog(
    deploy, vhost: str, oid: str
) -> None:  # type: ignore[no-untyped-def]
    # The order is stored, then its first message cannot be published (this client's
    # broker is out of reach): place_order still returns, the message is recorded as
    # unsent, and a worker's watchdog sends it at its next look, backlog or not.
    from fulfillment.engine import create_app
    from fulfillment.ops.embedded import free_port
    from fulfillment.orders.client import FulfillmentClient

    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost),
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    d.start_worker(concurrency=1)
    nowhere = d.settings.model_copy(update={"broker_url": amqp(vhost, free_port())})
    fail_fast = {"confirm_publish": True, "max_retries": 0}  # no reconnect tries: it is gone
    app = create_app("unreachable", nowhere, set_as_current=False, task_publish_retry=False,
                     broker_transport_options=fail_fast)  # fmt: skip
    client = FulfillmentClient(nowhere, app=app)
    handle = client.place_order(order_doc(order_id=oid))
    assert "unsent" in d.client.store.record(oid)
    assert d.client.handle(handle.id).result(timeout=30).startswith("Order fulfilled")
    (resent,) = [e for e in d.client.history(oid) if e.type == "redriven"]
    assert resent.data["step"] == "payment" and resent.data["epoch"] == 2, resent.data
    assert "unsent" not in d.client.store.record(oid)
    assert_effects_once(d, oid)


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


def test_paused_worker_fails_over_on_rabbitmq(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    # SIGSTOP holds the step's message unacknowledged on a connection that stays open (its
    # heartbeat is far longer): the watchdog re-drives the step, and when the paused
    # attempt wakes up its late call is refused or its result discarded (the epoch moved on).
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_SERVICE_LATENCY="1.5",
               FULFILLMENT_SERVICE_LATENCY_JITTER="0", FULFILLMENT_STEP_TIME_LIMIT="5",
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    start_workers(d, 2)
    d.client.place_order(order_doc(order_id=oid))
    victim = wait_until(lambda: freeze_worker_running(d, oid, "inventory"), 30, "inventory")
    try:
        view = d.wait(oid, timeout=30)  # finished by the other worker
    finally:
        victim.resume()
    assert view.status is OrderStatus.COMPLETED, d.explain(oid)

    def fenced_off() -> bool:
        discarded = "result_discarded" in [e.type for e in d.client.history(oid)]
        return discarded or bool(d.ledger(oid).get("refused_calls"))

    wait_until(fenced_off, 20, "the paused attempt's late call or result to be fenced off")
    assert_effects_once(d, oid)
    types = [e.type for e in d.client.history(oid)]
    assert "attempt_lost" in types and "redriven" in types, d.explain(oid)
    wait_until(lambda: d.queue_length() == 0, 20, "the queue to drain")


def test_broker_sigkill_and_restart_mid_run(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    # The broker dies with orders in every phase: steps running, messages queued, a
    # countdown held by a worker, an order waiting for approval. Durable queues keep
    # the persistent messages; what was lost (unconfirmed, or published while it was
    # down) the watchdog sends again. Workers survive and reconnect.
    require_own_node()
    with OwnNode() as node:
        d = deploy(FULFILLMENT_BROKER_URL=node.url(), FULFILLMENT_SERVICE_LATENCY="0.1")
        workers = start_workers(d, 2, concurrency=2)
        ids = [f"{oid}-{i}" for i in range(30)]
        for order_id in ids:
            d.client.place_order(order_doc(order_id=order_id))
        timeout = f"{oid}-timeout"  # its countdown ends after the broker is back
        d.client.place_order(order_doc(EXPENSIVE, order_id=timeout), approval_timeout=15)
        (approved,) = d.awaiting_approval([f"{oid}-approved"])
        wait_until(lambda: any(d.client.get_order(i).status.finished for i in ids), 30,
                   "some orders to finish")  # fmt: skip
        node.kill()
        unfinished = [i for i in ids if not d.client.get_order(i).status.finished]
        assert unfinished, "every order finished before the broker died: nothing was tested"
        time.sleep(2)  # the broker stays down a while: publishes meanwhile fail
        node.start()  # from its data: durable queues, persistent messages
        d.client.approve_order(approved, by="after the restart")
        d.wait_all_settled([*ids, approved, timeout], 120)
        for order_id in [*ids, approved]:
            assert d.client.get_order(order_id).status is OrderStatus.COMPLETED, d.explain(order_id)
            assert_effects_once(d, order_id)
        failure = d.client.get_order(timeout).failure
        assert failure is not None and failure.type == "ApprovalTimeout"
        assert all(w.alive() for w in workers), "a worker died with the broker"
        wait_until(lambda: d.queue_length() == 0, 30, "the queue to drain")


def test_a_lost_step_message_is_sent_again_within_the_bound(deploy, vhost: str, oid: str) -> None:  # type: ignore[no-untyped-def]
    # No outbox on RabbitMQ: a step is recorded as queued, then its message published. A
    # message that never reaches the queue (its publisher died in between) is here taken
    # out of the queue and acknowledged while the only worker is busy: the watchdog
    # sends it again once the step is FULFILLMENT_QUEUE_GRACE late and still missing two
    # heartbeats later; each of those two looks waits for the next tick (one heartbeat
    # at most), so the bound is QUEUE_GRACE + 4 heartbeats.
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost), FULFILLMENT_STEP_TIME_LIMIT="5",
               FULFILLMENT_QUEUE=f"fulfillment-{uuid.uuid4().hex[:8]}")  # fmt: skip
    d.start_worker(concurrency=1)
    busy = f"{oid}-busy"
    set_fault(d.redis, "inventory", attempts=1, mode="hang", order_id=busy)
    d.client.place_order(order_doc(order_id=busy))
    d.client.wait_for(busy, lambda v: v.current_step == "inventory" and v.phase == "running",
                      30, "the worker to be busy")  # fmt: skip
    d.client.place_order(order_doc(order_id=oid))
    with kombu.Connection(d.settings.broker_url) as conn:
        queue = conn.SimpleQueue(d.settings.queue).queue
        lost = wait_until(lambda: queue.get(no_ack=True), 10, "the order's first message")
    assert oid in json.dumps(lost.headers, default=str), lost.headers
    view = d.wait(oid, timeout=60)
    assert view.status is OrderStatus.COMPLETED, d.explain(oid)
    assert_effects_once(d, oid)
    events = d.client.history(oid)
    placed = events[0].at
    (redriven,) = [e for e in events if e.type == "redriven"]
    late = (redriven.at - placed).total_seconds()
    bound = d.settings.queue_grace + 4 * d.settings.watchdog_interval
    print(f"lost message sent again {late:.2f} s after the step was queued (bound {bound:g} s)")
    slack = 1.0  # for a loaded machine
    assert redriven.data["step"] == "payment" and late < bound + slack, d.explain(oid)


# --- a worker's first look at its broker ---------------------------------------------------


def _worker_exits(
    d: Deployment, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "celery", "-A", "fulfillment", "worker", "--loglevel", "INFO",
           "--without-gossip", "--without-mingle", "--concurrency", "1"]  # fmt: skip
    return subprocess.run(cmd, env={**d.env, **env}, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _lines(out: subprocess.CompletedProcess[str], word: str) -> list[str]:
    return [ln for ln in (out.stdout + out.stderr).splitlines() if word in ln]


def test_a_worker_refused_by_its_broker_says_why_in_one_line_and_exits(deploy) -> None:  # type: ignore[no-untyped-def]
    missing = f"no-such-vhost-{uuid.uuid4().hex[:6]}"
    d = deploy(FULFILLMENT_BROKER_URL=amqp(missing))
    out = _worker_exits(d)
    assert out.returncode == 1
    (line,) = _lines(out, "refuses the login")
    assert f"vhost {missing} not found" in line and f"rabbitmqctl add_vhost {missing}" in line
    assert "Traceback" not in out.stderr


def test_a_worker_whose_broker_does_not_answer_gives_up_after_its_bound(deploy) -> None:  # type: ignore[no-untyped-def]
    from fulfillment.ops.embedded import free_port

    d = deploy(FULFILLMENT_BROKER_URL=amqp("", port=free_port()),
               FULFILLMENT_BROKER_START_TIMEOUT="4")  # fmt: skip
    started = time.monotonic()
    out = _worker_exits(d)
    took = time.monotonic() - started
    assert out.returncode == 1 and took < 30, took
    tries = _lines(out, "does not answer")
    assert len(tries) >= 2, tries  # one line per try, then the last one
    assert "trying again in 1 s" in tries[0] and "gave up after 4 s" in tries[-1]
    assert "Traceback" not in out.stderr


def test_a_quorum_queue_on_a_vhost_made_classic_is_refused_with_the_fix(deploy, vhost: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_BROKER_URL=amqp(vhost))
    d.start_worker().destroy()  # it declared the classic queue
    out = _worker_exits(d, FULFILLMENT_QUEUE_TYPE="quorum")
    assert out.returncode == 1
    (line,) = _lines(out, "with other arguments")
    assert "PRECONDITION_FAILED" in line and "FULFILLMENT_QUEUE_TYPE" in line


def test_submit_and_status_say_when_the_broker_does_not_answer(deploy) -> None:  # type: ignore[no-untyped-def]
    from fulfillment.ops.embedded import free_port

    d = deploy(FULFILLMENT_BROKER_URL=amqp("", port=free_port()))
    placed = d.cli("submit", input=json.dumps(order_doc()))
    assert placed.returncode == 0, placed.stderr
    assert "cannot be reached" in placed.stderr and "the order is stored" in placed.stderr
    order_id = placed.stdout.strip()
    status = d.cli("status", order_id)
    assert status.returncode == 0 and "cannot be reached" in status.stderr

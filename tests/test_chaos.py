"""The chaos suite: random faults thrown at a few hundred orders of every kind, then invariants.

Orders: valid, expired card, unknown item (fails after payment), a scarce item
(some run out of stock), approval approved / rejected / timed out, and cancels at
random moments (the last step included). Faults, at random, while they run:
worker SIGKILL (main process only, or the whole tree) and restart, worker
SIGSTOP/SIGCONT past the heartbeat timeout, Redis SIGKILL and restart from its
append-only file, connection resets and stalls through a TCP proxy between the
workers and Redis, duplicated queue messages and forged task messages.

Then, for every order: it settled; completed => exactly one charge, one
reservation, one shipment and no undo; failed or cancelled => every effect
undone, in reverse order, one undo at a time; stock conserved per item; no
completed step re-ran; the queue drained; and the outcome is the one its kind
(and an accepted cancel) calls for.

It runs twice: with Redis as the broker, and with RabbitMQ as the broker (Redis
stays the order store). The RabbitMQ run adds the broker's own faults: its
connections reset and stalled through a second proxy, and the broker SIGKILLed
and restarted from its data. That broker is a node of the test's own
(``tests.rabbit.OwnNode``), so killing it touches no other user of the machine's.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kombu
import kombu.exceptions
import pytest
import redis

from fulfillment.orders.errors import DecisionError
from fulfillment.orders.keys import STOCK

from .proxy import Proxy
from .rabbit import OwnNode, require_own_node
from .servers import OwnServer
from .support import EXPENSIVE, Deployment, Worker, order_doc, wait_until

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CHAOS_SEED", "20261125"))  # another seed, another run
ORDERS = 240
WORKERS = 3
SCARCE = ("Limited Edition Vinyl Box", 12)  # units in stock for this run
PLAIN_ITEMS = ("Yoga Mat", "Cast Iron Skillet", "USB-C Charging Dock", "Trail Running Shoes")
KINDS = {  # kind -> weight
    "ok": 30, "expired": 8, "unknown": 8, "scarce": 10,
    "approve": 8, "reject": 5, "timeout": 5,
}  # fmt: skip
EXPECTED = {  # kind -> acceptable (status, failure type) when no cancel was accepted
    "ok": {("completed", None)},
    "expired": {("failed", "CreditCardExpired")},
    "unknown": {("failed", "UnknownItem")},
    "scarce": {("completed", None), ("failed", "OutOfStock")},
    "approve": {("completed", None)},
    "reject": {("failed", "ApprovalRejected")},
    "timeout": {("failed", "ApprovalTimeout")},
}
STEP_TASKS = {
    "payment": "fulfillment.process_payment",
    "inventory": "fulfillment.reserve_inventory",
    "delivery": "fulfillment.deliver_order",
    "approval": "fulfillment.require_approval",
}
EFFECTS = {"charge": "refund", "reservation": "release", "shipment": "shipment_cancelled"}
AMQP_PROPERTIES = ("correlation_id", "reply_to", "delivery_mode", "priority")
BROKER_UP_FOR = 15  # seconds the broker stays up between restarts (it takes ~10 s to boot)
CHAOS_SETTINGS = {
    "FULFILLMENT_SERVICE_LATENCY": "0.05",
    "FULFILLMENT_SERVICE_LATENCY_JITTER": "0.5",
    "FULFILLMENT_QUEUE_STALL_LIMIT": "10",
}


class Run:
    """The orders of one chaos run and what happened to them."""

    def __init__(self, rng: random.Random, orders: int = ORDERS) -> None:
        self.rng = rng
        self.docs: dict[str, dict[str, Any]] = {}
        self.kinds: dict[str, str] = {}
        self.cancel_at: dict[str, float] = {}  # order -> seconds after placing
        self.cancel_accepted: set[str] = set()
        self.placed_at: dict[str, float] = {}
        kinds, weights = zip(*KINDS.items(), strict=True)
        for i in range(orders):
            kind = rng.choices(kinds, weights)[0]
            oid = f"chaos-{i:03d}-{kind}"
            lines = [(rng.choice(PLAIN_ITEMS), "10.00", rng.randint(1, 3))]
            if kind == "unknown":
                lines.append(("Moon Rock", "10.00", 1))
            elif kind == "scarce":
                lines.append((SCARCE[0], "10.00", rng.randint(1, 3)))
            elif kind in ("approve", "reject", "timeout"):
                lines.append(EXPENSIVE)
            self.docs[oid] = order_doc(
                *lines, order_id=oid, expiration="01/20" if kind == "expired" else "12/39"
            )
            self.kinds[oid] = kind
            if rng.random() < 0.2:
                self.cancel_at[oid] = rng.uniform(0, 2.5)


class Faults:
    """Throws one random fault every so often until stopped; counts what it did."""

    def __init__(
        self, d: Deployment, server: OwnServer, proxy: Proxy, run: Run, worker_env: dict[str, str],
        broker: OwnNode | None = None, broker_proxy: Proxy | None = None,
    ) -> None:  # fmt: skip
        self.d, self.server, self.proxy, self.run = d, server, proxy, run
        self.worker_env = worker_env
        self.broker, self.broker_proxy = broker, broker_proxy
        self.rng = random.Random(SEED + 1)
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, daemon=True, name="faults")
        self.restarting: threading.Thread | None = None
        self.broker_up_since = time.monotonic() - BROKER_UP_FOR + 5  # the first one 5 s in

    def alive(self) -> list[Worker]:
        return [w for w in self.d.workers if w.alive()]

    def scheduled(self) -> None:
        """Faults thrown on a schedule rather than at random (none here)."""

    def actions(self) -> list[tuple[Any, int]]:
        """The faults to throw, with their weights."""
        actions = [
            (self.kill_worker, 4), (self.pause_worker, 3), (self.kill_redis, 1),
            (self.reset_connections, 2), (self.stall, 2), (self.duplicate, 3), (self.forge, 3),
        ]  # fmt: skip
        if self.broker is not None:
            actions += [(self.reset_broker_connections, 2), (self.stall_broker, 1)]
        return actions

    def _loop(self) -> None:
        funcs, weights = zip(*self.actions(), strict=True)
        while not self.stop.wait(self.rng.uniform(0.2, 0.8)):
            try:
                if self.broker is not None and self.broker_due():
                    self.restart_broker()
                self.scheduled()
                self.rng.choices(funcs, weights)[0]()
            except Exception as exc:  # a fault that could not be thrown is reported, not fatal
                if isinstance(exc, kombu.exceptions.OperationalError) and self.broker_down():
                    continue  # no message can be sent while the broker boots
                self.errors.append(repr(exc))

    def kill_worker(self) -> None:
        victim = self.rng.choice(self.alive())
        if self.rng.random() < 0.5:
            victim.kill()  # main process only: its pool child may finish its task
            self.counts["worker SIGKILL (main)"] += 1
        else:
            victim.destroy()  # the whole tree, as a lost machine
            self.counts["worker SIGKILL (tree)"] += 1
        self.d.start_worker(wait=False, **self.worker_env)

    def pause_worker(self) -> None:
        victim = self.rng.choice(self.alive())
        victim.pause()  # resumed past the 1 s heartbeat timeout, while other faults go on
        resume = threading.Timer(self.rng.uniform(1.5, 3.0), victim.resume)
        resume.daemon = True
        resume.start()
        self.counts["worker SIGSTOP/SIGCONT"] += 1

    def kill_redis(self) -> None:
        self.server.kill()
        time.sleep(self.rng.uniform(0.2, 1.0))
        self.server.start()
        self.counts["Redis SIGKILL + restart"] += 1

    def reset_connections(self) -> None:
        self.proxy.reset()
        self.counts["connection reset"] += 1

    def stall(self) -> None:
        self.proxy.stall(self.rng.uniform(0.5, 2.0))
        self.counts["connection stall"] += 1

    def reset_broker_connections(self) -> None:
        assert self.broker_proxy is not None
        self.broker_proxy.reset()
        self.counts["broker connection reset"] += 1

    def stall_broker(self) -> None:
        assert self.broker_proxy is not None
        self.broker_proxy.stall(self.rng.uniform(0.5, 2.0))
        self.counts["broker connection stall"] += 1

    def restart_broker(self) -> None:
        """SIGKILL the broker and start it again (it takes seconds to boot: other faults go
        on meanwhile). Up BROKER_UP_FOR seconds in between, so the run is not all downtime."""
        assert self.broker is not None
        if self.broker_down():
            return
        self.broker.kill()
        down_for = self.rng.uniform(0.2, 1.0)

        def start_again() -> None:
            time.sleep(down_for)
            try:
                self.broker.start()  # type: ignore[union-attr]
                self.broker_up_since = time.monotonic()
            except Exception as exc:
                self.errors.append(f"broker restart: {exc!r}")

        self.restarting = threading.Thread(target=start_again, daemon=True, name="broker")
        self.restarting.start()
        self.counts["broker SIGKILL + restart"] += 1

    def broker_due(self) -> bool:
        return not self.broker_down() and time.monotonic() - self.broker_up_since > BROKER_UP_FOR

    def broker_down(self) -> bool:
        return self.restarting is not None and self.restarting.is_alive()

    def finish(self) -> None:
        """Stop throwing faults; the broker is up and every worker runs again."""
        self.stop.set()
        self.thread.join(30)
        if self.restarting is not None:
            self.restarting.join(120)
        for w in self.d.workers:
            if w.alive():
                w.resume()

    def broker_url(self) -> str | None:
        """The RabbitMQ broker's URL (None: Redis is the broker)."""
        return self.broker.url() if self.broker is not None else None

    def queued_copy(self) -> bool:
        """Deliver a message waiting in the queue twice; False when none waits."""
        queue = self.d.settings.queue
        broker_url = self.broker_url()
        if broker_url is None:
            length = self.d.redis.llen(queue)
            message = self.d.redis.lindex(queue, self.rng.randrange(length)) if length else None
            if message:
                self.d.redis.lpush(queue, message)
            return bool(message)
        with kombu.Connection(broker_url, connect_timeout=2) as conn:
            message = conn.SimpleQueue(queue).queue.get(no_ack=False)
            if message is None:
                return False
            props = {k: message.properties[k] for k in AMQP_PROPERTIES if k in message.properties}
            conn.Producer().publish(
                message.body, routing_key=queue, exchange="", headers=message.headers,
                content_type=message.content_type, content_encoding=message.content_encoding,
                **props,
            )  # fmt: skip
            message.requeue()  # the original goes back: the same delivery, twice
        return True

    def duplicate(self) -> None:
        """A copy of a message waiting in the queue, or else of an order's live step message."""
        queue = self.d.settings.queue
        if self.queued_copy():
            self.counts["duplicated queued message"] += 1
            return
        oid = self.rng.choice(list(self.run.placed_at) or list(self.run.docs))
        record = self.d.client.store.record(oid)
        task = STEP_TASKS.get(record.get("step", ""))
        if task is None:
            return
        self.d.client.app.send_task(
            task, args=(oid,), kwargs={"epoch": int(record["epoch"])}, queue=queue
        )
        self.counts["duplicated step message"] += 1

    def forge(self) -> None:
        oid = self.rng.choice(list(self.run.placed_at) or list(self.run.docs))
        task, kwargs = self.rng.choice([
            ("fulfillment.refund_payment", {}),
            ("fulfillment.release_inventory", {}),
            ("fulfillment.cancel_shipment", {}),
            ("fulfillment.process_payment", {"epoch": self.rng.randint(1, 3)}),
            ("fulfillment.reserve_inventory", {"epoch": self.rng.randint(1, 3)}),
            ("fulfillment.deliver_order", {"epoch": self.rng.randint(1, 3)}),
            ("fulfillment.approval_timeout", {"epoch": self.rng.randint(1, 3)}),
        ])  # fmt: skip
        self.d.client.app.send_task(task, args=(oid,), kwargs=kwargs, queue=self.d.settings.queue)
        self.counts["forged message"] += 1


UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    kombu.exceptions.OperationalError,
)


def _retrying(call: Any, what: str) -> Any:
    """The test's own calls ride out a Redis (or broker) restart too."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call()
        except UNREACHABLE:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: Redis or the broker did not come back") from None
            time.sleep(0.2)


def _cancelled_by_chaos(d: Deployment, oid: str) -> bool:
    """Was a cancel of this order recorded (its reply may have been lost on the way)?"""
    return any("cancel" in e.type and e.data.get("by") == CANCELLER for e in d.client.history(oid))


def check(d: Deployment, run: Run, stock_before: dict[str, int]) -> list[str]:
    """Every invariant on every order; returns the violations."""
    violations: list[str] = []
    completed_units: Counter[str] = Counter()
    for oid, kind in run.kinds.items():
        view = d.client.get_order(oid)
        ledger = d.ledger(oid)
        status = view.status.value
        failure = view.failure.type if view.failure else None
        if not view.settled:
            violations.append(f"{oid}: not settled ({status})")
        if oid in run.cancel_accepted:
            if status != "cancelled":
                violations.append(f"{oid}: cancel was accepted, ended {status} {failure}")
        elif (status, failure) not in EXPECTED[kind]:
            violations.append(f"{oid} ({kind}): ended {status} {failure}")
        for effect, undo in EFFECTS.items():
            if int(ledger.get(f"{_counter(effect)}_effects", 0)) > 1:
                violations.append(f"{oid}: {effect} done twice")
            if status == "completed":
                if effect not in ledger or undo in ledger:
                    violations.append(f"{oid}: completed but {effect}/{undo}: {sorted(ledger)}")
            elif effect in ledger and undo not in ledger:
                violations.append(f"{oid}: {status} but its {effect} was not undone")
        if status == "completed":
            for line in run.docs[oid]["items"]:
                completed_units[line["itemName"]] += line["quantity"]
        events = d.client.history(oid)
        violations += undo_order_violations(oid, [c.action for c in view.compensations], events)
        for step in ("payment", "inventory", "delivery"):
            types = [e.type for e in events if e.data.get("step") == step]
            if "attempt_succeeded" in types:
                after = types[types.index("attempt_succeeded") + 1 :]
                if "attempt_started" in after:
                    violations.append(f"{oid}: completed step {step} ran again")
    stock_after = {k: int(v) for k, v in d.redis.hgetall(STOCK).items()}
    for item, before in stock_before.items():
        if before - stock_after[item] != completed_units.get(item, 0):
            violations.append(
                f"stock of {item!r}: {before} -> {stock_after[item]}, "
                f"but completed orders took {completed_units.get(item, 0)}"
            )
    return violations


UNDO_ORDER = ("cancel_shipment", "release_inventory", "refund_payment")  # the last step's first


def undo_order_violations(oid: str, undos: list[str], events: list[Any]) -> list[str]:
    """The order's undos ran in reverse order of its steps, each only once the one before
    it was done."""
    out = []
    if undos != [a for a in UNDO_ORDER if a in undos]:
        out.append(f"{oid}: undos listed out of order: {undos}")

    def first(kind: str, action: str) -> int | None:
        found = (
            i for i, e in enumerate(events) if e.type == kind and e.data.get("action") == action
        )
        return next(found, None)

    for before, after in itertools.pairwise(undos):
        done, started = first("compensated", before), first("compensation_started", after)
        if started is not None and (done is None or started < done):
            out.append(f"{oid}: undo {after} started before {before} was done")
    return out


def _counter(effect: str) -> str:
    return {"charge": "charge", "reservation": "reserve", "shipment": "ship"}[effect]


CANCELLER = "chaos-cancel"


def drive(
    d: Deployment, run: Run, faults: Faults, rng: random.Random, stock_before: dict[str, int]
) -> tuple[list[str], Counter[str]]:
    """Place the run's orders (decisions and cancels on timers) while ``faults`` fly, stop
    the faults, wait for every order to settle and the queue to drain, then check."""
    faults.thread.start()
    deciders: list[threading.Timer] = []

    def decide(oid: str, kind: str) -> None:
        try:
            if kind == "cancel":
                _retrying(lambda: d.client.cancel_order(oid, by=CANCELLER), "cancel")
                run.cancel_accepted.add(oid)
            elif kind == "approve":
                _retrying(lambda: d.client.approve_order(oid, by="chaos"), "approve")
            else:
                _retrying(lambda: d.client.reject_order(oid, by="chaos"), "reject")
        except DecisionError:
            pass  # already decided or finished: the order goes its own way

    for oid, doc in run.docs.items():  # a stream of orders, so faults hit the whole run
        kind = run.kinds[oid]
        timeout = 2.0 if kind == "timeout" else None
        _retrying(lambda doc=doc, t=timeout: d.client.place_order(doc, approval_timeout=t),
                  "place")  # fmt: skip
        run.placed_at[oid] = time.monotonic()
        if kind in ("approve", "reject"):
            deciders.append(threading.Timer(rng.uniform(0, 1.5), decide, (oid, kind)))
        if oid in run.cancel_at:
            deciders.append(threading.Timer(run.cancel_at[oid], decide, (oid, "cancel")))
        for timer in deciders[-2:]:
            if not timer.is_alive() and not timer.finished.is_set():
                timer.start()
        time.sleep(rng.uniform(0.05, 0.35))
    for timer in deciders:
        timer.join(90)
    faults.finish()
    d.wait_all_settled(list(run.docs), 240)
    wait_until(lambda: d.queue_length() == 0, 120, "the queue to drain")
    # a cancel whose reply a fault cut off was accepted all the same
    run.cancel_accepted |= {o for o in run.cancel_at if _cancelled_by_chaos(d, o)}
    violations = check(d, run, stock_before)
    outcomes = Counter(d.client.get_order(oid).status.value for oid in run.docs)
    return violations, outcomes


def run_chaos(tmp_path: Path, broker: OwnNode | None = None) -> None:
    """Place the run's orders while faults fly, then check every invariant."""
    started = time.monotonic()
    rng = random.Random(SEED)
    run = Run(rng)
    broker_proxy = Proxy(broker.port).start() if broker else None
    with OwnServer(tmp_path / "redis", fsync="always") as server:
        proxy = Proxy(server.port).start()
        env = dict(CHAOS_SETTINGS)
        worker_env = {"FULFILLMENT_REDIS_URL": proxy.url()}
        if broker is not None and broker_proxy is not None:
            env["FULFILLMENT_BROKER_URL"] = broker.url()  # the test's own calls go direct
            worker_env["FULFILLMENT_BROKER_URL"] = broker.url(broker_proxy.port)
        d = Deployment(server.url, tmp_path / "dep", **env)
        faults = Faults(d, server, proxy, run, worker_env, broker, broker_proxy)
        try:
            for _ in range(WORKERS):
                d.start_worker(wait=False, **worker_env)
            for w in list(d.workers):
                d.wait_for_worker(w)
            d.redis.hset(STOCK, SCARCE[0], SCARCE[1])
            stock_before = {k: int(v) for k, v in d.redis.hgetall(STOCK).items()}

            violations, outcomes = drive(d, run, faults, rng, stock_before)
        finally:
            faults.stop.set()
            d.close()
            proxy.close()
            if broker_proxy is not None:
                broker_proxy.close()
    took = time.monotonic() - started
    print(
        f"\nchaos ({'RabbitMQ' if broker else 'Redis'} as the broker): {len(run.docs)} orders "
        f"({dict(Counter(run.kinds.values()))}), "
        f"{len(run.cancel_accepted)} cancels accepted; outcomes: {dict(outcomes)}; "
        f"faults: {dict(faults.counts)} "
        f"({sum(faults.counts.values())} in all); violations: {len(violations)}; {took:.0f} s"
    )
    assert not faults.errors, faults.errors[:5]
    assert sum(faults.counts.values()) >= 50, faults.counts
    if broker is not None:
        assert faults.counts["broker SIGKILL + restart"] >= 2, faults.counts
    assert violations == [], "\n".join(violations[:20])


def test_chaos(tmp_path: Path) -> None:
    run_chaos(tmp_path)


def test_chaos_with_rabbitmq_as_the_broker(tmp_path: Path) -> None:
    require_own_node()
    with OwnNode() as broker:
        run_chaos(tmp_path, broker)

"""Approve, reject, cancel and the timeout race on the same waiting order: one wins.

Three racer processes fire at each order's approval deadline (give or take a few
milliseconds), while the worker's countdown task and watchdog fire the timeout.
It runs with Redis as the broker and with RabbitMQ (a vhost of its own), where the
countdown is a message the worker holds unacknowledged until its ETA.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections import Counter
from typing import Any

import pytest

from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.errors import DecisionError
from fulfillment.orders.settings import Settings
from fulfillment.orders.state import OrderStatus

from .rabbit import broker_env
from .support import EXPENSIVE, Deployment, order_doc

TRIALS = 500
BATCH = 50
DECISION_EVENTS = ("approval_decided", "approval_timed_out", "order_cancelled")

pytestmark = pytest.mark.slow


def racer(kind: str, settings: Settings, plan, barrier, results) -> None:  # type: ignore[no-untyped-def]
    client = FulfillmentClient(settings)
    for order_id, at in plan:
        barrier.wait(timeout=60)
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            getattr(client, f"{kind}_order")(order_id, by=f"racer-{kind}")
            outcome = "won"
        except DecisionError as exc:
            outcome = "refused: " + str(exc)
        results.put((order_id, kind, outcome))


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_exactly_one_decision_wins_every_trial(deploy, broker: str) -> None:  # type: ignore[no-untyped-def]
    with broker_env(broker) as env:
        race(deploy(**env))


def race(d: Deployment, trials: int = TRIALS) -> None:
    """``trials`` waiting orders, each raced by approve, reject, cancel and its timeout."""
    d.start_worker(concurrency=2)
    rng = random.Random(500)
    outcomes: dict[str, dict[str, str]] = {}
    ctx = mp.get_context("spawn")
    for batch in range(trials // BATCH):
        ids = [f"race-{batch:02d}-{i:02d}" for i in range(BATCH)]
        for i, order_id in enumerate(ids):  # deadlines 40 ms apart: racers keep up
            doc = order_doc(EXPENSIVE, order_id=order_id)
            d.client.place_order(doc, approval_timeout=3 + 0.04 * i)
        for order_id in ids:
            d.client.wait_for(order_id, lambda v: v.status is OrderStatus.AWAITING_APPROVAL, 30)
        # fire at the deadline +- 15 ms: the timeout wins some trials, a person others
        plan = []
        for order_id in ids:
            deadline = d.client.get_order(order_id).approval.deadline
            assert deadline is not None
            plan.append((order_id, deadline.timestamp() + rng.uniform(-0.015, 0.015)))
        barrier = ctx.Barrier(3)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=racer, args=(k, d.settings, plan, barrier, results))
            for k in ("approve", "reject", "cancel")
        ]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in range(3 * BATCH)]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        for order_id, kind, outcome in got:
            outcomes.setdefault(order_id, {})[kind] = outcome

    winners: Counter[str] = Counter()
    for order_id, by_kind in outcomes.items():
        view = d.wait(order_id)
        events = [e for e in d.client.history(order_id) if e.type in DECISION_EVENTS]
        assert len(events) == 1, (order_id, by_kind, [e.type for e in events])
        won = [k for k, o in by_kind.items() if o == "won"]
        assert len(won) <= 1, (order_id, by_kind)
        for outcome in by_kind.values():
            if outcome != "won":
                assert "already" in outcome, outcome
        winner = won[0] if won else "timeout"
        winners[winner] += 1
        expected: dict[str, Any] = {
            "approve": (OrderStatus.COMPLETED, None),
            "reject": (OrderStatus.FAILED, "ApprovalRejected"),
            "cancel": (OrderStatus.CANCELLED, "OrderCancelled"),
            "timeout": (OrderStatus.FAILED, "ApprovalTimeout"),
        }
        status, failure = expected[winner]
        assert view.status is status, (order_id, winner, view.status)
        assert (view.failure.type if view.failure else None) == failure
    assert len(outcomes) == trials
    print(f"{trials} trials, winners: {dict(winners)}")
    assert len(winners) >= 3, winners  # the races really were races

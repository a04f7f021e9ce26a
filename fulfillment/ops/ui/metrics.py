"""Order metrics for Prometheus, on Flower's ``/metrics`` beside Flower's own.

The engine counts every event of the order workflow as it happens, in the same atomic
step (:mod:`fulfillment.engine.metrics`), so the figures hold whichever worker did the
work, survive a Flower restart and agree between several Flowers. This collector asks
the engine for them when Prometheus scrapes; it keeps nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ...engine.metrics import Histogram
from ...orders.client import FulfillmentClient


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if le == float("inf") else repr(le), float(n)) for le, n in histogram.buckets]


class OrderMetrics(Collector):
    """The ``fulfillment_*`` series, read from the order store at each scrape (the
    engine's :meth:`~fulfillment.engine.WorkflowClient.metrics` of the order workflow)."""

    def __init__(self, client: Callable[[], FulfillmentClient]) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        m = self._client().orders.metrics()

        orders = GaugeMetricFamily(
            "fulfillment_orders",
            "Orders by status now (finished ones until their retention ends)",
            labels=["status"],
        )
        for status, size in m.statuses.items():
            orders.add_metric([status], size)
        yield orders

        placed = CounterMetricFamily("fulfillment_orders_placed", "Orders placed")
        placed.add_metric([], m.event("run_started"))
        yield placed
        finished = CounterMetricFamily(
            "fulfillment_orders_finished", "Orders finished, by how", labels=["status"]
        )
        for ended in ("completed", "failed", "cancelled"):
            finished.add_metric([ended], m.event(f"run_{ended}"))
        yield finished
        compensating = CounterMetricFamily(
            "fulfillment_orders_compensating",
            "Orders that failed or were cancelled with effects to undo (each was compensating "
            "until they were undone)",
        )
        compensating.add_metric([], m.event("run_compensating"))
        yield compensating
        resumed = CounterMetricFamily("fulfillment_orders_resumed", "Orders resumed from a step")
        resumed.add_metric([], m.event("run_resumed"))
        yield resumed

        attempts = CounterMetricFamily(
            "fulfillment_step_attempts",
            "Step attempts by outcome: succeeded, retried (failed, retried later), failed "
            "(the order failed), lost (presumed dead), discarded (a late result)",
            labels=["step", "outcome"],
        )
        retries = CounterMetricFamily(
            "fulfillment_step_retries", "Failed attempts that were retried", labels=["step"]
        )
        for step, outcomes in sorted(m.attempts.items()):
            for outcome, value in sorted(outcomes.items()):
                attempts.add_metric([step, outcome], value)
                if outcome == "retried":
                    retries.add_metric([step], value)
        yield attempts
        yield retries

        per_step = [
            ("fulfillment_step_retry_now", "Steps run at once by an operator (retry now)",
             "retried_now"),
            ("fulfillment_redrives", "Steps the watchdog sent again (worker or message lost)",
             "redriven"),
        ]  # fmt: skip
        for metric, doc, kind in per_step:
            family = CounterMetricFamily(metric, doc, labels=["step"])
            for step, value in sorted(m.events.get(kind, {}).items()):
                family.add_metric([step], value)
            yield family

        durations = HistogramMetricFamily(
            "fulfillment_step_duration_seconds",
            "Duration of step attempts that reported (succeeded or failed)",
            labels=["step"],
        )
        for step, histogram in m.durations.items():
            durations.add_metric([step], _buckets(histogram), histogram.sum)
        yield durations
        waits = HistogramMetricFamily(
            "fulfillment_approval_wait_seconds",
            "How long orders waited at the approval gate until decided or timed out",
        )
        if "approval" in m.waits:
            waits.add_metric([], _buckets(m.waits["approval"]), m.waits["approval"].sum)
        yield waits

        approvals = CounterMetricFamily(
            "fulfillment_approvals", "Approval waits that ended, by how", labels=["outcome"]
        )
        approvals.add_metric(["decided"], m.event("gate_decided", "approval"))
        approvals.add_metric(["timed_out"], m.event("gate_timed_out", "approval"))
        yield approvals

        compensations = CounterMetricFamily(
            "fulfillment_compensations",
            "Compensations by outcome: done, not_needed (nothing to undo), lost, resent",
            labels=["action", "outcome"],
        )
        for action, outcomes in sorted(m.compensations.items()):
            for outcome, value in sorted(outcomes.items()):
                compensations.add_metric([action, outcome], value)
        yield compensations


def register() -> None:
    """Add the order metrics to the registry Flower's ``/metrics`` exports."""
    from prometheus_client import REGISTRY

    from ...orders.client import default_client

    REGISTRY.register(OrderMetrics(default_client))

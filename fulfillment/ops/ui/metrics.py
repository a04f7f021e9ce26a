"""Order metrics for Prometheus, on Flower's ``/metrics`` beside Flower's own.

The transition scripts count every history event in the workflow's metrics hash in
the same atomic step as the event (``engine/lua/lib.lua``, ``count_event``), so the
figures hold whichever worker did the work, survive a Flower restart and agree
between several Flowers. The status gauges are the status indexes' sizes. This
collector reads both when Prometheus scrapes; it keeps nothing itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ...orders.client import FulfillmentClient
from .data import status_counts

#: the histogram buckets of ``lib.lua`` (BUCKETS_MS), in seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _histogram(counts: dict[str, int], name: str) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets and the sum (seconds) of histogram ``name`` of the hash."""
    running, buckets = 0, []
    for i, le in enumerate(BUCKETS, start=1):
        running += counts.get(f"h|{name}|{i}", 0)
        buckets.append((repr(float(le)), float(running)))
    running += counts.get(f"h|{name}|{len(BUCKETS) + 1}", 0)
    buckets.append(("+Inf", float(running)))
    return buckets, counts.get(f"h|{name}|sum", 0) / 1_000_000


class OrderMetrics(Collector):
    """The ``fulfillment_*`` series, read from the order store at each scrape."""

    def __init__(self, client: Callable[[], FulfillmentClient]) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        client = self._client()
        counts = client.store.metrics()
        by_kind: dict[str, dict[tuple[str, ...], int]] = defaultdict(dict)
        for field, value in counts.items():
            kind, *labels = field.split("|")
            by_kind[kind][tuple(labels)] = value
        events = by_kind["n"]

        def event(kind: str, name: str = "") -> int:
            return events.get((kind, name), 0)

        def per_name(kind: str) -> list[tuple[str, int]]:
            return sorted((name, v) for (k, name), v in events.items() if k == kind)

        orders = GaugeMetricFamily(
            "fulfillment_orders",
            "Orders by status now (finished ones until their retention ends)",
            labels=["status"],
        )
        for status, size in status_counts(client).items():
            orders.add_metric([status], size)
        yield orders

        placed = CounterMetricFamily("fulfillment_orders_placed", "Orders placed")
        placed.add_metric([], event("run_started"))
        yield placed
        finished = CounterMetricFamily(
            "fulfillment_orders_finished", "Orders finished, by how", labels=["status"]
        )
        for ended in ("completed", "failed", "cancelled"):
            finished.add_metric([ended], event(f"run_{ended}"))
        yield finished
        compensating = CounterMetricFamily(
            "fulfillment_orders_compensating",
            "Orders that failed or were cancelled with effects to undo (each was compensating "
            "until they were undone)",
        )
        compensating.add_metric([], event("run_compensating"))
        yield compensating
        resumed = CounterMetricFamily("fulfillment_orders_resumed", "Orders resumed from a step")
        resumed.add_metric([], event("run_resumed"))
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
        for (step, outcome), value in sorted(by_kind["a"].items()):
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
            for step, value in per_name(kind):
                family.add_metric([step], value)
            yield family

        durations = HistogramMetricFamily(
            "fulfillment_step_duration_seconds",
            "Duration of step attempts that reported (succeeded or failed)",
            labels=["step"],
        )
        waits = HistogramMetricFamily(
            "fulfillment_approval_wait_seconds",
            "How long orders waited at the approval gate until decided or timed out",
        )
        for name in sorted({labels[0] for labels in by_kind["h"]}):
            buckets, total = _histogram(counts, name)
            if name.startswith("d:"):
                durations.add_metric([name[2:]], buckets, total)
            elif name == "w:approval":
                waits.add_metric([], buckets, total)
        yield durations
        yield waits

        approvals = CounterMetricFamily(
            "fulfillment_approvals", "Approval waits that ended, by how", labels=["outcome"]
        )
        approvals.add_metric(["decided"], event("gate_decided", "approval"))
        approvals.add_metric(["timed_out"], event("gate_timed_out", "approval"))
        yield approvals

        compensations = CounterMetricFamily(
            "fulfillment_compensations",
            "Compensations by outcome: done, not_needed (nothing to undo), lost, resent",
            labels=["action", "outcome"],
        )
        for (action, outcome), value in sorted(by_kind["c"].items()):
            compensations.add_metric([action, outcome], value)
        yield compensations


def register() -> None:
    """Add the order metrics to the registry Flower's ``/metrics`` exports."""
    from prometheus_client import REGISTRY

    from ...orders.client import default_client

    REGISTRY.register(OrderMetrics(default_client))

"""A workflow's metrics: what its runs did, counted as it happened, read in one piece.

The transition scripts count every history event in the workflow's metrics hash in
the same atomic step as the event (``lua/lib.lua``, ``count_event``), so the figures
hold whichever worker did the work and agree between readers; run counts by status
are the status indexes' sizes. :meth:`WorkflowClient.metrics
<fulfillment.engine.client.WorkflowClient.metrics>` reads both (summed over a
cluster's buckets) into a :class:`RunMetrics`; how the hash is laid out stays here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from .replies import US

#: upper bounds of the histograms' buckets, in seconds (``lua/lib.lua``: BUCKETS_MS)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Histogram(BaseModel):
    """Cumulative counts per upper bound in seconds (the last bound is infinity), and the
    sum of the observed values in seconds."""

    buckets: list[tuple[float, int]]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


class RunMetrics(BaseModel):
    """What a workflow's runs did, since its store was first used.

    ``statuses``: runs per status now, in the workflow's words, and ``retrying``;
    ``events``: how often each counted event happened, by the step, gate or action it
    names (``""`` for a run's own events: ``run_started``, ``run_completed``, ...);
    ``attempts``: step -> outcome (succeeded, retried, failed, lost, discarded) -> count;
    ``compensations``: undo -> outcome (done, not_needed, lost, resent) -> count;
    ``durations``: step -> attempt durations; ``waits``: gate -> how long runs waited.
    """

    statuses: dict[str, int] = {}
    events: dict[str, dict[str, int]] = {}
    attempts: dict[str, dict[str, int]] = {}
    compensations: dict[str, dict[str, int]] = {}
    durations: dict[str, Histogram] = {}
    waits: dict[str, Histogram] = {}

    def event(self, kind: str, name: str = "") -> int:
        """How often event ``kind`` happened (for ``name``: a step, gate or action)."""
        return self.events.get(kind, {}).get(name, 0)

    @classmethod
    def read(
        cls, counters: Mapping[str, int], statuses: Mapping[str, int], label: Callable[[str], str]
    ) -> RunMetrics:
        """From the metrics hash's fields (``counters``) and the status indexes' sizes."""
        events: dict[str, dict[str, int]] = defaultdict(dict)
        attempts: dict[str, dict[str, int]] = defaultdict(dict)
        compensations: dict[str, dict[str, int]] = defaultdict(dict)
        histograms: set[str] = set()
        for field, value in counters.items():
            kind, _, rest = field.partition("|")
            name, _, detail = rest.partition("|")
            if kind == "n":
                events[name][detail] = int(value)
            elif kind == "a":
                attempts[name][detail] = int(value)
            elif kind == "c":
                compensations[name][detail] = int(value)
            elif kind == "h":
                histograms.add(name)
        durations, waits = {}, {}
        for name in sorted(histograms):
            histogram = _histogram(counters, name)
            if name.startswith("d:"):
                durations[name[2:]] = histogram
            elif name.startswith("w:"):
                waits[name[2:]] = histogram
        for step, histogram in durations.items():
            # every attempt that reported is in the histogram; those not failed succeeded
            outcomes = attempts[step]
            reported = outcomes.get("failed", 0) + outcomes.get("retried", 0)
            outcomes["succeeded"] = max(histogram.count - reported, 0)
        return cls(
            statuses={label(s) if s != "retrying" else s: n for s, n in statuses.items()},
            events=dict(events),
            attempts=dict(attempts),
            compensations=dict(compensations),
            durations=durations,
            waits=waits,
        )


def _histogram(counters: Mapping[str, int], name: str) -> Histogram:
    running, buckets = 0, []
    for i, bound in enumerate(BUCKETS, start=1):
        running += int(counters.get(f"h|{name}|{i}", 0))
        buckets.append((float(bound), running))
    running += int(counters.get(f"h|{name}|{len(BUCKETS) + 1}", 0))
    buckets.append((float("inf"), running))
    return Histogram(buckets=buckets, sum=int(counters.get(f"h|{name}|sum", 0)) / US)


__all__ = ["BUCKETS", "Histogram", "RunMetrics"]

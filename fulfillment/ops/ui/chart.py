"""The order page's chart: every attempt, retry wait, the approval wait and each undo on
one time axis (as Temporal's timeline view draws a workflow), drawn on the server as SVG.

:func:`chart` lays the order's timeline out as lanes of bars in SVG coordinates; the
template (``templates/chart.html``) only draws them. Each bar carries its outcome (its
colour) and a hover text: what it was, when, for how long, on which worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ...orders.timeline import Timeline
from ..render import duration

#: the drawing's geometry, in SVG units
WIDTH = 960
LABEL = 150  # the lanes' names, left of the axis
LANE = 26
BAR = 16
AXIS = 28  # the time axis under the lanes
MIN_BAR = 2.0  # a bar this narrow at least, so that a 3 ms attempt still shows


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    kind: str  # succeeded, failed, lost, running, retry-wait, waiting, decided, undo-...
    label: str  # the hover text


@dataclass
class Lane:
    name: str
    y: float
    bars: list[Bar] = field(default_factory=list)


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass
class Chart:
    width: int
    height: int
    lanes: list[Lane]
    ticks: list[Tick]
    start: datetime
    end: datetime

    @property
    def legend(self) -> list[tuple[str, str]]:
        """(kind, what it means), for the kinds the chart shows."""
        shown = {b.kind for lane in self.lanes for b in lane.bars}
        return [(k, text) for k, text in LEGEND if k in shown]


LEGEND = (
    ("succeeded", "attempt succeeded"),
    ("failed", "attempt failed"),
    ("lost", "attempt lost (its worker died)"),
    ("running", "running now"),
    ("retry-wait", "waiting to retry"),
    ("waiting", "waiting for approval"),
    ("decided", "approval wait, decided"),
    ("timed-out", "approval wait, timed out"),
    ("undo-done", "undo done"),
    ("undo-not-needed", "undo: nothing to undo"),
    ("undo-failed", "undo failed (tried again)"),
    ("undo-running", "undo running"),
)


def _ms(delta: timedelta) -> float:
    return delta / timedelta(milliseconds=1)


def stamp(moment: datetime) -> str:
    """A time with its time zone: ``14:03:07.125 UTC``."""
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC"


def chart(tl: Timeline, now: datetime | None = None) -> Chart:
    """The order's timeline as lanes of bars on one time axis (``now``: for what runs)."""
    now = now or datetime.now(UTC)
    view = tl.order
    start = view.created_at
    end = view.finished_at or now
    for step in tl.steps:  # a late attempt (presumed lost) can end after the order
        for a in step.attempts:
            if a.duration_ms is not None:
                end = max(end, a.started_at + timedelta(milliseconds=a.duration_ms))
    for undo in tl.compensations:
        for c in undo.claims:
            if c.duration_ms is not None:
                end = max(end, c.started_at + timedelta(milliseconds=c.duration_ms))
    span = max(_ms(end - start), 1.0)
    scale = (WIDTH - LABEL - 40) / span

    def x(moment: datetime) -> float:
        return LABEL + max(_ms(moment - start), 0.0) * scale

    def bar(begin: datetime, finish: datetime, kind: str, label: str) -> Bar:
        left = x(begin)
        return Bar(left, max(x(finish) - left, MIN_BAR), kind, label)

    lanes: list[Lane] = []

    def lane(name: str) -> Lane:
        made = Lane(name, 8 + len(lanes) * LANE)
        lanes.append(made)
        return made

    requested = next((e for e in tl.events if e.type == "approval_requested"), None)
    if view.approval.required and requested is not None:
        gate = lane("approval")
        decided = view.approval.decided_at
        finish = decided or (view.finished_at if view.status.ended else now)
        if view.approval.decision is None and not view.status.ended:
            kind, how = "waiting", "waiting for a decision"
        elif view.approval.state == "timed_out" or view.approval.decision == "timed_out":
            kind, how = "timed-out", "timed out"
        else:
            kind = "decided"
            how = f"{view.approval.decision} by {view.approval.by}" if view.approval.by else "ended"
        assert finish is not None
        gate.bars.append(bar(requested.at, finish, kind,
                             f"approval: {how}; waited {duration(_ms(finish - requested.at))} "
                             f"from {stamp(requested.at)}"))  # fmt: skip

    for step in tl.steps:
        if step.name == "approval":
            continue
        row = lane(step.name)
        previous_end: datetime | None = None
        for a in step.attempts:
            if previous_end is not None and a.started_at > previous_end:
                row.bars.append(bar(previous_end, a.started_at, "retry-wait",
                                    f"{step.name}: waiting "
                                    f"{duration(_ms(a.started_at - previous_end))} before "
                                    f"attempt {a.number}"))  # fmt: skip
            finished = (a.started_at + timedelta(milliseconds=a.duration_ms)
                        if a.duration_ms is not None else now)  # fmt: skip
            what = a.outcome
            if a.error_type:
                what += f": {a.error_type}"
            row.bars.append(bar(a.started_at, finished, a.outcome,
                                f"{step.name} attempt {a.number}: {what}; "
                                f"{duration(a.duration_ms)} from {stamp(a.started_at)} "
                                f"on {a.worker or 'unknown worker'}"))  # fmt: skip
            previous_end = finished
        if step.next_retry_at and previous_end is not None:
            due = stamp(step.next_retry_at)
            row.bars.append(bar(previous_end, min(step.next_retry_at, now), "retry-wait",
                                f"{step.name}: next attempt at {due}"))  # fmt: skip

    for undo in tl.compensations:
        row = lane(f"undo {undo.action}")
        for c in undo.claims:
            finished = (c.started_at + timedelta(milliseconds=c.duration_ms)
                        if c.duration_ms is not None else now)  # fmt: skip
            kind = {"done": "undo-done", "not_needed": "undo-not-needed",
                    "running": "undo-running"}.get(c.outcome, "undo-failed")  # fmt: skip
            row.bars.append(bar(c.started_at, finished, kind,
                                f"{undo.action} (try {c.number}): {c.outcome}; "
                                f"{duration(c.duration_ms)} from {stamp(c.started_at)} "
                                f"on {c.worker or 'unknown worker'}"))  # fmt: skip

    height = 8 + len(lanes) * LANE + AXIS
    ticks = [
        Tick(LABEL + i * (WIDTH - LABEL - 40) / 5, "+" + duration(span * i / 5) if i else "0")
        for i in range(6)
    ]
    return Chart(WIDTH, height, lanes, ticks, start, end)


__all__ = ["Bar", "Chart", "Lane", "Tick", "chart", "stamp"]

"""An order's timeline: every step and every attempt, rebuilt from its history.

Temporal's UI keeps only an activity's last failure; the history here keeps every
attempt (start, duration, worker, Celery task id, output or error), so the timeline
shows them all. The folding is the engine's (:mod:`fulfillment.engine.views`).
"""

from __future__ import annotations

from pydantic import BaseModel

from ..engine.views import (
    AttemptView,
    CompensationTimeline,
    RunView,
    StepTimeline,
    fold_attempts,
    fold_compensations,
)
from .state import HistoryEvent, OrderView, order_event


class Timeline(BaseModel):
    """``fulfillment show --json`` prints this."""

    order: OrderView
    steps: list[StepTimeline]
    #: the order's undos, in the order they run (the last completed step's first)
    compensations: list[CompensationTimeline] = []
    events: list[HistoryEvent]


def build(run: RunView, events: list[HistoryEvent]) -> Timeline:
    """The order's timeline from its run view and its (engine) history."""
    return Timeline(
        order=OrderView.from_run(run),
        steps=fold_attempts(run.steps, events, run.current_step, run.next_retry_at),
        compensations=fold_compensations(run.compensations, events),
        events=[order_event(e) for e in events],
    )


__all__ = ["AttemptView", "CompensationTimeline", "StepTimeline", "Timeline", "build"]

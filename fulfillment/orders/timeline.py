"""An order's timeline: every step and every attempt, rebuilt from its history.

Temporal's UI keeps only an activity's last failure; the history here keeps every
attempt (start, duration, worker, Celery task id, output or error), so the timeline
shows them all. The folding is the engine's (:mod:`fulfillment.engine.views`).
"""

from __future__ import annotations

from pydantic import BaseModel

from ..engine import views as engine
from ..engine.views import AttemptView, CompensationTimeline, StepTimeline
from .state import HistoryEvent, OrderView


class Timeline(BaseModel):
    """``fulfillment show --json`` prints this."""

    order: OrderView
    steps: list[StepTimeline]
    #: the order's undos, in the order they run (the last completed step's first)
    compensations: list[CompensationTimeline] = []
    events: list[HistoryEvent]

    @classmethod
    def of(cls, timeline: engine.Timeline) -> Timeline:
        """The order's timeline: the engine's timeline of its run, with the order's view."""
        return cls(
            order=OrderView.from_run(timeline.run),
            steps=timeline.steps,
            compensations=timeline.compensations,
            events=timeline.events,
        )


__all__ = ["AttemptView", "CompensationTimeline", "StepTimeline", "Timeline"]

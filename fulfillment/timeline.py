"""An order's timeline: every step and every attempt, rebuilt from its history.

Temporal's UI keeps only an activity's last failure; the history here keeps every
attempt (start, duration, worker, Celery task id, output or error), so the
timeline shows them all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from .state import HistoryEvent, OrderView, ts


class AttemptView(BaseModel):
    number: int
    started_at: datetime
    worker: str | None = None
    task_id: str | None = None
    outcome: str = "running"  # running | succeeded | failed | lost
    duration_ms: float | None = None
    result: str | None = None
    error_type: str | None = None
    error: str | None = None
    retryable: bool | None = None
    retry_in_ms: float | None = None
    next_retry_at: datetime | None = None
    note: str | None = None  # e.g. a late result that was discarded


class StepTimeline(BaseModel):
    name: str
    state: str
    attempts: list[AttemptView]
    result: str | None = None
    next_retry_at: datetime | None = None


class Timeline(BaseModel):
    """``fulfillment show --json`` prints this."""

    order: OrderView
    steps: list[StepTimeline]
    events: list[HistoryEvent]


def _ms(value: str | int | None) -> float | None:
    return None if value in (None, "") else int(value) / 1000


def build(order: OrderView, events: list[HistoryEvent]) -> Timeline:
    """Fold the history into per-step attempt lists."""
    attempts: dict[str, dict[int, AttemptView]] = {s.name: {} for s in order.steps}
    for event in events:
        d = event.data
        step = d.get("step")
        if step not in attempts or "attempt" not in d:
            continue
        number = int(d["attempt"])
        per_step = attempts[step]
        if event.type == "attempt_started":
            per_step[number] = AttemptView(
                number=number, started_at=event.at, worker=d.get("worker"), task_id=d.get("task_id")
            )
            continue
        attempt = per_step.get(number)
        if attempt is None:  # history older than this code, or trimmed
            attempt = per_step[number] = AttemptView(number=number, started_at=event.at)
        if event.type == "attempt_succeeded":
            attempt.outcome = "succeeded"
            attempt.duration_ms = _ms(d.get("duration_us"))
            attempt.result = d.get("result")
        elif event.type == "attempt_failed":
            attempt.outcome = "failed"
            attempt.duration_ms = _ms(d.get("duration_us"))
            attempt.error_type = d.get("error_type")
            attempt.error = d.get("error")
            attempt.retryable = bool(d.get("retryable"))
            attempt.retry_in_ms = _ms(d.get("retry_in_us"))
            attempt.next_retry_at = ts(d.get("next_at"))
        elif event.type == "attempt_lost":
            attempt.outcome = "lost"
            attempt.error_type = "AttemptLost"
            attempt.error = d.get("reason")
            attempt.duration_ms = (event.at - attempt.started_at) / timedelta(milliseconds=1)
        elif event.type == "result_discarded":
            attempt.note = f"late result discarded ({d.get('outcome')}): {d.get('reason')}"
    steps = []
    for step in order.steps:
        steps.append(
            StepTimeline(
                name=step.name,
                state=step.state,
                attempts=sorted(attempts[step.name].values(), key=lambda a: a.number),
                result=step.result,
                next_retry_at=order.next_retry_at if order.current_step == step.name else None,
            )
        )
    return Timeline(order=order, steps=steps, events=events)


__all__ = ["AttemptView", "StepTimeline", "Timeline", "build"]

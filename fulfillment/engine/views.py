"""The read side: a run's current state, its history events, and its timeline of attempts.

Built from the run record and its history stream. Temporal's UI keeps only an
activity's last failure; the history here keeps every attempt (start, duration,
worker, Celery task id, output or error), so the timeline shows them all. A run's
input is never part of a view (it may hold secrets); its ``summary`` is what the
workflow says may be shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, computed_field

from .keys import RunStatus
from .replies import US


def ts(value: str | int | None) -> datetime | None:
    """Server microseconds -> aware UTC datetime."""
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / US, tz=UTC)


def _csv(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


class StepView(BaseModel):
    name: str
    state: str
    attempts: int
    result: str | None = None
    last_error: str | None = None


class GateView(BaseModel):
    """A gate of the workflow: whether this run has it, and how it was decided."""

    name: str
    required: bool
    state: str | None = None
    deadline: datetime | None = None
    decision: str | None = None
    by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None


class FailureView(BaseModel):
    type: str
    message: str
    step: str | None = None


class CompensationView(BaseModel):
    """One undo of a failed or cancelled run, in the order they run (the last step's first).

    ``state``: ``waiting`` (an undo before it in the list runs first), ``pending`` (sent,
    not started yet), ``running``, ``retrying`` (it failed ``failures`` times, the last
    with ``last_error``, and runs again after its backoff), ``done`` or ``not_needed``
    (there was nothing to undo).
    """

    action: str
    step: str | None = None
    state: str
    summary: str | None = None
    failures: int = 0
    last_error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "not_needed")

    @classmethod
    def from_record(cls, record: dict[str, str], action: str) -> CompensationView:
        p = f"c:{action}"
        state = record.get(p) or "pending"
        failures = int(record.get(f"{p}:failures") or 0)
        if state == "pending" and failures:
            state = "retrying"
        return cls(
            action=action,
            step=record.get(f"{p}:step"),
            state=state,
            summary=record.get(f"{p}:summary"),
            failures=failures,
            last_error=record.get(f"{p}:error") if state not in ("done", "not_needed") else None,
        )


class RunView(BaseModel):
    """A run's current state."""

    id: str
    workflow: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    current_step: str | None = None
    phase: str | None = None
    epoch: int
    next_retry_at: datetime | None = None
    result: str | None = None
    failure: FailureView | None = None
    #: what a compensating run becomes once its undos are done (failed or cancelled)
    ends_as: RunStatus | None = None
    steps: list[StepView]
    gates: list[GateView] = []
    compensations: list[CompensationView] = []
    summary: dict[str, Any] = {}

    @property
    def settled(self) -> bool:
        """Final, and every compensation finished: nothing more will happen."""
        return self.status.finished and all(c.finished for c in self.compensations)

    @property
    def compensated(self) -> list[str]:
        """What was actually undone (e.g. ``Payment of 59.75 refunded``)."""
        return [c.summary or c.action for c in self.compensations if c.state == "done"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def retrying(self) -> bool:
        """A step failed and is waiting for its next attempt."""
        return self.phase == "retry_wait"

    def gate(self, name: str) -> GateView:
        for g in self.gates:
            if g.name == name:
                return g
        return GateView(name=name, required=False)

    @classmethod
    def from_record(cls, record: dict[str, str], gates: list[str] | None = None) -> RunView:
        """The view of a raw run record; ``gates``: the workflow's gate names."""
        plan = _csv(record.get("steps"))
        steps = [
            StepView(
                name=name,
                state=record.get(f"s:{name}:state", "pending"),
                attempts=int(record.get(f"s:{name}:attempts") or 0),
                result=record.get(f"s:{name}:result"),
                last_error=record.get(f"s:{name}:error"),
            )
            for name in plan
        ]
        failure = None
        if record.get("failure:type"):
            failure = FailureView(
                type=record["failure:type"],
                message=record.get("failure:message", ""),
                step=record.get("failure:step") or None,
            )
        phase = record.get("phase") or None
        return cls(
            id=record["id"],
            workflow=record.get("workflow", ""),
            status=RunStatus(record["status"]),
            created_at=ts(record["created"]),  # type: ignore[arg-type]
            updated_at=ts(record.get("updated")),
            finished_at=ts(record.get("finished")),
            current_step=record.get("step") or None,
            phase=phase,
            epoch=int(record.get("epoch") or 1),
            next_retry_at=ts(record.get("next_at")) if phase == "retry_wait" else None,
            result=record.get("result"),
            failure=failure,
            ends_as=RunStatus(record["ends_as"]) if record.get("ends_as") else None,
            steps=steps,
            gates=[
                GateView(
                    name=g,
                    required=g in plan,
                    state=record.get(f"s:{g}:state"),
                    deadline=ts(record.get(f"g:{g}:deadline")),
                    decision=record.get(f"g:{g}:decision"),
                    by=record.get(f"g:{g}:by"),
                    reason=record.get(f"g:{g}:reason"),
                    decided_at=ts(record.get(f"g:{g}:at")),
                )
                for g in gates or ()
            ],
            compensations=[
                CompensationView.from_record(record, a) for a in _csv(record.get("compensations"))
            ],
            summary=json.loads(record.get("summary") or "{}"),
        )


class Event(BaseModel):
    """One entry of a run's append-only history."""

    id: str
    at: datetime
    type: str
    data: dict[str, Any]

    @classmethod
    def from_entry(cls, entry_id: str, kind: str, data: dict[str, Any]) -> Event:
        millis = int(entry_id.split("-", 1)[0])
        return cls(
            id=entry_id, at=datetime.fromtimestamp(millis / 1000, tz=UTC), type=kind, data=data
        )

    def labelled(self, label: Callable[[str], str]) -> Event:
        """The event with its type in the workflow's words (``Workflow.label``)."""
        word = label(self.type)
        return self if word == self.type else self.model_copy(update={"type": word})


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


def _ms(value: str | int | None) -> float | None:
    return None if value in (None, "") else int(value) / 1000


def fold_attempts(
    steps: list[StepView],
    events: list[Event],
    current_step: str | None,
    next_retry_at: datetime | None,
) -> list[StepTimeline]:
    """Fold the history into per-step attempt lists."""
    attempts: dict[str, dict[int, AttemptView]] = {s.name: {} for s in steps}
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
    return [
        StepTimeline(
            name=step.name,
            state=step.state,
            attempts=sorted(attempts[step.name].values(), key=lambda a: a.number),
            result=step.result,
            next_retry_at=next_retry_at if current_step == step.name else None,
        )
        for step in steps
    ]


class ClaimView(BaseModel):
    """One try of an undo: a worker claimed it, then it finished, failed or was lost."""

    number: int
    started_at: datetime
    worker: str | None = None
    task_id: str | None = None
    outcome: str = "running"  # running | done | not_needed | failed | lost
    duration_ms: float | None = None
    summary: str | None = None
    error: str | None = None
    retry_in_ms: float | None = None


class CompensationTimeline(BaseModel):
    """An undo of the run and every try of it. ``position``: its place in the order the
    undos run (1: the first, the last completed step's)."""

    action: str
    step: str | None = None
    position: int
    state: str
    summary: str | None = None
    claims: list[ClaimView]


def fold_compensations(
    compensations: list[CompensationView], events: list[Event]
) -> list[CompensationTimeline]:
    """Fold the history into per-undo lists of tries, in the order the undos run."""
    claims: dict[str, dict[int, ClaimView]] = {c.action: {} for c in compensations}
    for event in events:
        d = event.data
        action = d.get("action")
        if action not in claims or "claim" not in d:
            continue
        number = int(d["claim"])
        tries = claims[action]
        if event.type == "compensation_started":
            tries[number] = ClaimView(number=number, started_at=event.at, worker=d.get("worker"),
                                      task_id=d.get("task_id"))  # fmt: skip
            continue
        claim = tries.get(number)
        if claim is None:
            claim = tries[number] = ClaimView(number=number, started_at=event.at)
        claim.duration_ms = (event.at - claim.started_at) / timedelta(milliseconds=1)
        if event.type == "compensated":
            claim.outcome = str(d.get("outcome") or "done")
            claim.summary = d.get("summary")
        elif event.type == "compensation_failed":
            claim.outcome = "failed"
            claim.error = f"{d.get('error_type')}: {d.get('error')}"
            claim.retry_in_ms = _ms(d.get("retry_in_us"))
        elif event.type == "compensation_lost":
            claim.outcome = "lost"
            claim.error = d.get("reason")
    return [
        CompensationTimeline(
            action=c.action,
            step=c.step,
            position=i,
            state=c.state,
            summary=c.summary,
            claims=sorted(claims[c.action].values(), key=lambda t: t.number),
        )
        for i, c in enumerate(compensations, start=1)
    ]


class Timeline(BaseModel):
    """A run, every attempt of each of its steps, every try of each undo, and its raw
    history."""

    run: RunView
    steps: list[StepTimeline]
    compensations: list[CompensationTimeline] = []
    events: list[Event]

    @classmethod
    def build(
        cls, run: RunView, events: list[Event], label: Callable[[str], str] = str
    ) -> Timeline:
        """The timeline of ``run`` from its history (the engine's event types); its
        events as the workflow names them (``label``)."""
        return cls(
            run=run,
            steps=fold_attempts(run.steps, events, run.current_step, run.next_retry_at),
            compensations=fold_compensations(run.compensations, events),
            events=[e.labelled(label) for e in events],
        )

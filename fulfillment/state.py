"""Read models: an order's current state and its history events, as returned by the API.

These are what ``get_order`` and ``history`` return and what ``--json`` prints;
their field names are the stable, documented shape (see README, "JSON output").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, computed_field

from .scripts import csv

US = 1_000_000


class OrderStatus(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.CANCELLED)


def ts(value: str | int | None) -> datetime | None:
    """Server microseconds -> aware UTC datetime."""
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / US, tz=UTC)


class StepView(BaseModel):
    name: str
    state: str
    attempts: int
    result: str | None = None
    last_error: str | None = None


class ApprovalView(BaseModel):
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


_COMPENSATION_STATE = {"done": "done", "not_needed": "not_needed"}


class CompensationView(BaseModel):
    action: str
    state: str  # pending | done | not_needed
    summary: str | None = None


class OrderView(BaseModel):
    """An order's current state (no card number: ``card`` is masked)."""

    id: str
    status: OrderStatus
    total: Decimal
    items: int
    card: str
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    current_step: str | None = None
    phase: str | None = None
    epoch: int
    next_retry_at: datetime | None = None
    result: str | None = None
    failure: FailureView | None = None
    approval: ApprovalView
    steps: list[StepView]
    compensations: list[CompensationView] = []

    @property
    def settled(self) -> bool:
        """Finished, and no compensation still pending: nothing more will happen."""
        return self.status.finished and all(c.state != "pending" for c in self.compensations)

    @property
    def compensated(self) -> list[str]:
        """What was actually undone (e.g. ``Payment of 59.75 refunded``)."""
        return [c.summary or c.action for c in self.compensations if c.state == "done"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def retrying(self) -> bool:
        """A step failed and is waiting for its next attempt."""
        return self.phase == "retry_wait"

    @classmethod
    def from_record(cls, record: dict[str, str]) -> OrderView:
        summary = json.loads(record.get("summary") or "{}")
        steps = [
            StepView(
                name=name,
                state=record.get(f"s:{name}:state", "pending"),
                attempts=int(record.get(f"s:{name}:attempts") or 0),
                result=record.get(f"s:{name}:result"),
                last_error=record.get(f"s:{name}:error"),
            )
            for name in csv(record.get("steps"))
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
            status=OrderStatus(record["status"]),
            total=Decimal(record["total"]),
            items=int(record.get("items") or 0),
            card=summary.get("card", ""),
            created_at=ts(record["created"]),
            updated_at=ts(record.get("updated")),
            finished_at=ts(record.get("finished")),
            current_step=record.get("step") or None,
            phase=phase,
            epoch=int(record.get("epoch") or 1),
            next_retry_at=ts(record.get("next_at")) if phase == "retry_wait" else None,
            result=record.get("result"),
            failure=failure,
            approval=ApprovalView(
                required=record.get("needs_approval") == "1",
                state=record.get("s:approval:state"),
                deadline=ts(record.get("approval:deadline")),
                decision=record.get("approval:decision"),
                by=record.get("approval:by"),
                reason=record.get("approval:reason"),
                decided_at=ts(record.get("approval:at")),
            ),
            steps=steps,
            compensations=[
                CompensationView(
                    action=a,
                    # claimed and running is still pending: it has not settled
                    state=_COMPENSATION_STATE.get(record.get(f"c:{a}", ""), "pending"),
                    summary=record.get(f"c:{a}:summary"),
                )
                for a in csv(record.get("compensations"))
            ],
        )


class HistoryEvent(BaseModel):
    """One entry of an order's append-only history."""

    id: str
    at: datetime
    type: str
    data: dict[str, Any]

    @classmethod
    def from_entry(cls, entry_id: str, kind: str, data: dict[str, Any]) -> HistoryEvent:
        millis = int(entry_id.split("-", 1)[0])
        return cls(
            id=entry_id, at=datetime.fromtimestamp(millis / 1000, tz=UTC), type=kind, data=data
        )

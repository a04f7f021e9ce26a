"""Read models of orders: an order's current state and its history, as the API returns them.

These are what ``get_order`` and ``history`` return and what ``--json`` prints; their
field names are the stable, documented shape (README, "JSON output"). They are the
engine's run views of the order workflow, whose words (:data:`WORDS`) the engine
uses already.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, computed_field

from ..engine.keys import RunStatus
from ..engine.views import CompensationView, Event, FailureView, GateView, RunView, StepView

#: one event of an order's history (its type in the order's words: ``order_placed``, ...)
HistoryEvent = Event


class OrderStatus(StrEnum):
    """An order's status: its run's (:class:`~fulfillment.engine.RunStatus`), in the order
    workflow's words (:data:`WORDS`): a run ``waiting`` at its gate is an order
    ``awaiting_approval``. An order that failed or was cancelled is ``compensating`` while
    its effects are undone (a refund, a release, a cancelled shipment), and ``failed`` /
    ``cancelled`` only once they are.
    """

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"

    @property
    def finished(self) -> bool:
        """Final: completed, failed or cancelled."""
        return self.run_status.finished

    @property
    def ended(self) -> bool:
        """No step runs any more: final, or compensating."""
        return self.run_status.ended

    @property
    def run_status(self) -> RunStatus:
        """The engine's status this one names."""
        return next(s for s in RunStatus if WORDS.get(s.value, s.value) == self.value)

    @classmethod
    def of(cls, status: RunStatus) -> OrderStatus:
        """The order's word for the engine's ``status``."""
        return cls(WORDS.get(status.value, status.value))


#: The order workflow's vocabulary (``Workflow(labels=WORDS)``): its words for the
#: engine's run statuses and history events where they differ. The engine names
#: events and filters by them; nothing translates afterwards.
WORDS: dict[str, str] = {
    RunStatus.WAITING.value: OrderStatus.AWAITING_APPROVAL.value,
    "run_started": "order_placed",
    "run_completed": "order_completed",
    "run_failed": "order_failed",
    "run_cancelled": "order_cancelled",
    "run_compensating": "order_compensating",
    "run_resumed": "order_resumed",
    "gate_waiting": "approval_requested",
    "gate_decided": "approval_decided",
    "gate_timed_out": "approval_timed_out",
}


class ApprovalView(BaseModel):
    required: bool
    state: str | None = None
    deadline: datetime | None = None
    decision: str | None = None
    by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None

    @classmethod
    def of(cls, gate: GateView) -> ApprovalView:
        return cls(**gate.model_dump(exclude={"name"}))


class OrderLine(BaseModel):
    """One line of an order, as its views show it."""

    item_name: str
    quantity: int
    item_price: Decimal | None = None


class OrderView(BaseModel):
    """An order's current state (no card number: ``card`` is masked). ``items`` is how
    many lines it has, ``lines`` the lines themselves."""

    id: str
    status: OrderStatus
    total: Decimal
    items: int
    lines: list[OrderLine] = []
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
    #: what a compensating order becomes once its effects are undone (failed or cancelled)
    ends_as: OrderStatus | None = None
    approval: ApprovalView
    steps: list[StepView]
    compensations: list[CompensationView] = []

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

    @classmethod
    def from_record(cls, record: dict[str, str]) -> OrderView:
        """The view of a raw order record."""
        return cls.from_run(RunView.from_record(record, ["approval"]))

    @classmethod
    def from_run(cls, run: RunView) -> OrderView:
        summary = run.summary
        return cls(
            id=run.id,
            status=OrderStatus.of(run.status),
            total=Decimal(str(summary.get("total", "0"))),
            items=int(summary.get("items") or 0),
            lines=[_line(line) for line in summary.get("lines") or ()],
            card=summary.get("card", ""),
            created_at=run.created_at,
            updated_at=run.updated_at,
            finished_at=run.finished_at,
            current_step=run.current_step,
            phase=run.phase,
            epoch=run.epoch,
            next_retry_at=run.next_retry_at,
            result=run.result,
            failure=run.failure,
            ends_as=OrderStatus.of(run.ends_as) if run.ends_as else None,
            approval=ApprovalView.of(run.gate("approval")),
            steps=run.steps,
            compensations=run.compensations,
        )


def _line(line: list[Any]) -> OrderLine:
    """A line of the summary: ``[name, quantity, price]`` (earlier summaries had no price)."""
    price = Decimal(str(line[2])) if len(line) > 2 else None
    return OrderLine(item_name=str(line[0]), quantity=int(line[1]), item_price=price)

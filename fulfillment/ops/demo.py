"""``fulfillment demo``: the Temporal demo's scenarios that need no crash, against live workers.

All scenarios run at once, each on its own order; faults and the shortened
approval timeout are scoped to that order, so they do not disturb the others.
The table at the end shows each order's final status, its attempts per step
and its elapsed time, and whether that is what the scenario expects.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..orders.client import FulfillmentClient, OrderHandle
from ..orders.errors import FulfillmentError
from ..orders.services import set_fault
from ..orders.services.faults import clear_faults
from ..orders.state import OrderStatus, OrderView
from .generator import card
from .processes import ProcessGroup, live_workers, wait_for_workers, worker_command
from .render import STATUS_STYLE


def _order(*lines: tuple[str, str, int], expired: bool = False) -> dict[str, Any]:
    return {
        "items": [{"itemName": n, "itemPrice": p, "quantity": q} for n, p, q in lines],
        "payment": {"creditCard": card(expired=expired)},
    }


ORDINARY = (("Noise-Cancelling Headset", "319.99", 1), ("USB-C Charging Dock", "89.00", 2))
EXPENSIVE = (("Electric Cargo Bike", "4890.00", 3),)


@dataclass
class Scenario:
    name: str
    order: dict[str, Any]
    expected: OrderStatus
    expected_failure: str | None = None
    fault: dict[str, Any] | None = None
    decision: str | None = None  # approve | reject, sent once the order waits
    approval_timeout: float | None = None
    handle: OrderHandle | None = field(default=None, repr=False)
    view: OrderView | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def ok(self) -> bool:
        if self.view is None:
            return False
        failure = self.view.failure.type if self.view.failure else None
        return self.view.status is self.expected and failure == self.expected_failure


def scenarios(step_time_limit: float) -> list[Scenario]:
    return [
        Scenario("happy path", _order(*ORDINARY), OrderStatus.COMPLETED),
        Scenario(
            "expired card",
            _order(*ORDINARY, expired=True),
            OrderStatus.FAILED,
            "CreditCardExpired",
        ),
        Scenario(
            "inventory down 3 attempts (errors)",
            _order(*ORDINARY),
            OrderStatus.COMPLETED,
            fault={"service": "inventory", "attempts": 3, "mode": "raise"},
        ),
        Scenario(
            f"inventory hangs past the {step_time_limit:g}s limit once",
            _order(*ORDINARY),
            OrderStatus.COMPLETED,
            fault={"service": "inventory", "attempts": 1, "mode": "hang"},
        ),
        Scenario(
            "unknown item after payment (refunded)",
            _order(("Unicorn Saddle@@@", "99.00", 1)),
            OrderStatus.FAILED,
            "UnknownItem",
        ),
        Scenario(
            "approval needed, approved",
            _order(*EXPENSIVE),
            OrderStatus.COMPLETED,
            decision="approve",
        ),
        Scenario(
            "approval needed, rejected",
            _order(*EXPENSIVE),
            OrderStatus.FAILED,
            "ApprovalRejected",
            decision="reject",
        ),
        Scenario(
            "approval needed, nobody decides (5s timeout)",
            _order(*EXPENSIVE),
            OrderStatus.FAILED,
            "ApprovalTimeout",
            approval_timeout=5,
        ),
    ]


def _attempts(view: OrderView | None) -> str:
    if view is None:
        return "-"
    return "  ".join(f"{s.name[:3]} {s.attempts}" for s in view.steps if s.name != "approval")


def _table(runs: list[Scenario]) -> Table:
    table = Table(title="fulfillment demo", title_justify="left")
    for column in (
        "scenario",
        "order",
        "expected",
        "final status",
        "attempts",
        "elapsed",
        "outcome",
    ):
        table.add_column(column, overflow="fold")
    for run in runs:
        view = run.view
        expected = run.expected.value + (
            f" ({run.expected_failure})" if run.expected_failure else ""
        )
        if view is None:
            status = Text("did not finish", style="red")
            elapsed, outcome = "-", run.error or ""
        else:
            status = Text(view.status.value, style=STATUS_STYLE[view.status])
            if view.failure:
                status.append(f" ({view.failure.type})")
            finished = view.finished_at or view.updated_at or view.created_at
            elapsed = f"{(finished - view.created_at).total_seconds():.2f} s"
            if view.result:
                outcome = view.result
            elif view.failure:
                outcome = view.failure.message
                if view.compensated:
                    outcome += f"; {'; '.join(view.compensated)}"
            else:
                outcome = ""
        mark = Text("✓ ", style="green") if run.ok else Text("✗ ", style="red")
        table.add_row(
            mark + Text(run.name),
            run.handle.id if run.handle else "-",
            expected,
            status,
            _attempts(view),
            elapsed,
            outcome,
        )
    return table


#: how long the order left for a person waits (``--leave-waiting``)
LEFT_WAITING_FOR = 600.0


def run(
    client: FulfillmentClient, console: Console, *, workers: int, timeout: float,
    leave_waiting: bool = False,
) -> bool:  # fmt: skip
    """Run every scenario; print the table; True if every order ended as expected.

    ``leave_waiting``: also place one order over the approval threshold that waits for a
    person (10 minutes), to approve or reject from the Orders view or the CLI.
    """
    settings = client.settings
    redis = client.store.client
    group = ProcessGroup()
    runs: list[Scenario] = []
    try:
        if live_workers(redis, settings):
            console.print("Using the workers already running.")
        else:
            names = [f"demo{i}-{uuid.uuid4().hex[:6]}@%h" for i in range(1, workers + 1)]
            logs = Path(settings.data_dir).expanduser() / "logs"
            console.print(f"Starting {workers} worker(s) (logs in {logs}) ...")
            for name in names:
                group.start(
                    name, worker_command(name, queue=settings.queue), log=logs / "demo-worker.log"
                )
            wait_for_workers(redis, settings, names, timeout=60)

        runs.extend(scenarios(settings.step_time_limit))
        started = time.monotonic()
        for scenario in runs:
            order_id = f"demo-{uuid.uuid4().hex[:10]}"
            scenario.order["id"] = order_id
            if scenario.fault:
                set_fault(redis, order_id=order_id, **scenario.fault)
            scenario.handle = client.place_order(
                scenario.order, approval_timeout=scenario.approval_timeout
            )
            console.print(f"placed {order_id}: {scenario.name}")

        for scenario in runs:
            if scenario.decision and scenario.handle:
                _decide_when_waiting(client, scenario, console, timeout)

        deadline = started + timeout
        for scenario in runs:
            assert scenario.handle is not None
            try:
                scenario.view = client.wait(
                    scenario.handle.id, max(deadline - time.monotonic(), 0.1)
                )
            except FulfillmentError as exc:
                scenario.error = str(exc)
        console.print(_table(runs))
        ok = all(s.ok for s in runs)
        orders_view = f"http://{settings.flower_address}:{settings.flower_port}/orders"
        console.print(
            f"{sum(s.ok for s in runs)}/{len(runs)} scenarios ended as expected "
            f"in {time.monotonic() - started:.1f} s. "
            "Inspect one with: ./dev show <order id> (fulfillment show, with .venv active), "
            f"or in Flower's Orders view ({orders_view} while ./dev up runs)"
        )
        if leave_waiting:
            waiting = client.place_order(
                {**_order(*EXPENSIVE), "id": f"demo-{uuid.uuid4().hex[:10]}"},
                approval_timeout=LEFT_WAITING_FOR,
            )
            client.wait_for(
                waiting.id, lambda v: v.status is OrderStatus.AWAITING_APPROVAL, timeout,
                "waiting for approval",
            )  # fmt: skip
            console.print(
                f"{waiting.id} waits for your approval for {LEFT_WAITING_FOR / 60:.0f} "
                f"minutes: approve or reject it at {orders_view}/{waiting.id}, or with "
                f"./dev approve {waiting.id} --by you"
            )
        return ok
    finally:
        for scenario in runs:  # leave no fault injection behind
            if scenario.fault and scenario.order.get("id"):
                clear_faults(redis, scenario.fault["service"], scenario.order["id"])
        group.stop()


def _decide_when_waiting(
    client: FulfillmentClient, scenario: Scenario, console: Console, timeout: float
) -> None:
    assert scenario.handle is not None
    order_id = scenario.handle.id
    view = client.wait_for(
        order_id,
        lambda v: v.status is OrderStatus.AWAITING_APPROVAL or v.status.finished,
        timeout,
        "waiting for approval",
    )
    if view.status is not OrderStatus.AWAITING_APPROVAL:
        return
    if scenario.decision == "approve":
        client.approve_order(order_id, by="demo-manager")
    else:
        client.reject_order(order_id, reason="Demo: manager says no", by="demo-manager")
    console.print(f"{'approved' if scenario.decision == 'approve' else 'rejected'} {order_id}")

"""The order workflow: Temporal's order-fulfillment demo, as a definition the engine runs.

An order over the approval threshold waits for a human first (the ``approval``
gate); then payment, inventory and delivery run, each undone by its compensation
if the order fails or is cancelled later; the result is ``Order fulfilled: `` and
the three steps' summaries. Adding a step is adding an element here (README,
"Adding a step").
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery

from ..engine import Engine, Gate, Step, Undo, Workflow, WorkflowRuntime, adopt, register
from ..engine.app import settings_or_exit
from . import activities
from .errors import ORDER_ERRORS
from .models import Order
from .settings import Settings, get_settings
from .state import WORDS

PREFIX = "fulfillment"

__all__ = ["fulfilled", "install", "needs_approval", "order_workflow", "registered_on"]


def needs_approval(order: Order, settings: Settings) -> bool:
    """Does ``order`` wait for a person's approval? Its total is over the threshold."""
    return order.total > settings.approval_threshold


def fulfilled(results: Mapping[str, str]) -> str:
    """The result of a completed order: every step's own summary."""
    return "Order fulfilled: " + ", ".join(results.values())


def install(app: Celery, settings: Settings | None = None) -> WorkflowRuntime:
    """Run the order workflow on an existing Celery app (a Django project's own).

    The engine goes on the app (:func:`fulfillment.engine.adopt`: its delivery settings
    over the app's), and the order tasks (``fulfillment.<step>``) are registered on
    it. Installing on the same app again returns what is there.
    """
    settings = settings or settings_or_exit(get_settings)
    adopt(app, settings)
    return registered_on(app) or register(app, order_workflow(settings))


def registered_on(app: Celery) -> WorkflowRuntime | None:
    """The order workflow's runtime on ``app``, if it is registered there."""
    return Engine.of(app).workflows.get("order")


def order_workflow(settings: Settings) -> Workflow:
    """The order workflow of a deployment (its approval threshold and timeout)."""
    return Workflow(
        name="order",
        noun="order",
        labels=WORDS,
        errors=ORDER_ERRORS,
        input=Order,
        encode=Order.canonical_json,
        summary=Order.summary,
        result=fulfilled,
        namespace=PREFIX,
        task_prefix=PREFIX,
        cancel_error="OrderCancelled",
        companions=("ledger",),  # the simulated services' ledger of the order
        steps=[
            Gate(
                "approval",
                timeout=settings.approval_timeout,
                applies=lambda order: needs_approval(order, settings),
                reject_error="ApprovalRejected",
                timeout_error="ApprovalTimeout",
                timeout_message="Approval timed out",
                cancel_decides=True,
                task_name=f"{PREFIX}.require_approval",
                timeout_task_name=f"{PREFIX}.approval_timeout",
            ),
            Step(
                "payment",
                activities.process_payment,
                task_name=f"{PREFIX}.process_payment",
                undo=Undo("refund_payment", activities.refund_payment),
            ),
            Step(
                "inventory",
                activities.reserve_inventory,
                task_name=f"{PREFIX}.reserve_inventory",
                undo=Undo("release_inventory", activities.release_inventory),
            ),
            Step(
                "delivery",
                activities.deliver_order,
                task_name=f"{PREFIX}.deliver_order",
                undo=Undo("cancel_shipment", activities.cancel_shipment),
            ),
        ],
    )

"""The workflow: which steps an order runs, and the Celery chain that runs them.

An order needing approval runs ``approval`` first; its chain is just the
approval task, because the wait ends outside the chain (approve, reject,
timeout). Every other start -- a new order, an approval, a watchdog re-drive --
sends the chain of the remaining steps, from the step in question, under the
order's current epoch. Messages carry only ``(order_id, epoch)``; the worker
reads the order from Redis, so no card number travels through the broker.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

STEPS = ("approval", "payment", "inventory", "delivery")
PIPELINE = ("payment", "inventory", "delivery")

TASK_NAMES = {
    "approval": "fulfillment.require_approval",
    "payment": "fulfillment.process_payment",
    "inventory": "fulfillment.reserve_inventory",
    "delivery": "fulfillment.deliver_order",
}
COMPENSATION_TASKS = {
    "refund_payment": "fulfillment.refund_payment",
    "release_inventory": "fulfillment.release_inventory",
    "cancel_shipment": "fulfillment.cancel_shipment",
}
APPROVAL_TIMEOUT_TASK = "fulfillment.approval_timeout"


def steps_for(needs_approval: bool) -> list[str]:
    """The steps of an order."""
    return list(STEPS if needs_approval else PIPELINE)


def chain_steps(step: str) -> list[str]:
    """The steps one chain runs when it starts at ``step``."""
    if step == "approval":
        return ["approval"]
    return list(PIPELINE[PIPELINE.index(step) :])


def _display(order_id: str, epoch: int, summary: str | dict[str, Any] | None) -> dict[str, str]:
    """What Flower and logs show as the task's arguments: the order id, never a card."""
    info: dict[str, Any] = {"epoch": epoch}
    if summary:
        info.update(json.loads(summary) if isinstance(summary, str) else summary)
    return {"argsrepr": repr((order_id,)), "kwargsrepr": repr(info)}


def signature(
    app: Celery, step: str, order_id: str, epoch: int, summary: str | dict | None, queue: str
) -> Signature:
    """The immutable signature of one step's task.

    ``ignore_result``: a client sends tasks by name, without their task classes,
    and Celery would then subscribe to each task's result channel on the result
    backend (and unsubscribe again when the ``AsyncResult`` is dropped): two
    wasted commands per order. Nobody waits on Celery results here; the order
    record is the result.
    """
    return app.signature(
        TASK_NAMES[step],
        args=(order_id,),
        kwargs={"epoch": epoch},
        immutable=True,
        queue=queue,
        ignore_result=True,
        **_display(order_id, epoch, summary),
    )


def dispatch(
    app: Celery,
    order_id: str,
    step: str,
    epoch: int,
    summary: str | dict | None,
    *,
    queue: str,
    countdown: float = 0,
) -> None:
    """Send the chain that runs the order from ``step`` on."""
    sigs = [signature(app, s, order_id, epoch, summary, queue) for s in chain_steps(step)]
    options: dict[str, Any] = {}
    if countdown > 0:
        options["countdown"] = countdown
    if len(sigs) == 1:
        sigs[0].apply_async(**options)
    else:
        chain(*sigs).apply_async(**options)


def dispatch_compensations(app: Celery, order_id: str, actions: list[str], *, queue: str) -> None:
    """Send one task per compensation (refund, release, cancel shipment)."""
    for action in actions:
        app.signature(
            COMPENSATION_TASKS[action],
            args=(order_id,),
            queue=queue,
            immutable=True,
            ignore_result=True,
        ).apply_async()

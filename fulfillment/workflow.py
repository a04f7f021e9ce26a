"""The workflow: which steps an order runs, and the Celery chain that runs them.

An order needing approval runs ``approval`` first; its chain is just the
approval task, because the wait ends outside the chain (approve, reject,
timeout). Every other start -- a new order, an approval, a watchdog re-drive --
sends the chain of the remaining steps, from the step in question, under the
order's current epoch. Messages carry only ``(order_id, epoch)``; the worker
reads the order from Redis, so no card number travels through the broker.

Where the broker is the order store's own Redis database, the message that
starts an order and the message of each next step are held back while they are
built (:func:`held`) and pushed by the transition script that stores the order
or records the step (``create.lua``, ``complete.lua``): one round trip fewer per
step, and no moment at which a step is recorded but its successor not yet sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature
from celery.canvas import signature as as_signature

from .keys import message_id
from .transport import Outbox, outbox, transport_for

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
#: which step's effect each compensation undoes
COMPENSATES = {
    "refund_payment": "payment",
    "release_inventory": "inventory",
    "cancel_shipment": "delivery",
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

    ``task_id`` is :func:`~fulfillment.keys.message_id` of the step and epoch: the
    watchdog asks whether a live worker holds exactly that message.
    """
    return app.signature(
        TASK_NAMES[step],
        args=(order_id,),
        kwargs={"epoch": epoch},
        immutable=True,
        queue=queue,
        ignore_result=True,
        task_id=message_id(order_id, step, epoch),
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


def holds_messages(app: Celery, store_url: str) -> bool:
    """Can the order store's scripts push this app's messages (the outbox)?

    Only when the broker is exactly the store's Redis URL (same server, same
    database) and goes through :mod:`fulfillment.transport`.
    """
    url = app.conf.broker_url
    ours = transport_for(url) if isinstance(url, str) else None
    return url == store_url and ours is not None and app.conf.broker_transport == ours


def held(send: Callable[[], object]) -> Outbox:
    """Run ``send`` (which publishes messages) and return its pushes, held back."""
    with outbox() as box:
        send()
    return box


def continue_chain(app: Celery, request: Any) -> None:
    """Send the next task of the running task's chain, as Celery's tracer does on success.

    Run inside :func:`held`, it builds that message for ``complete.lua`` to push;
    the caller then clears ``request.chain`` so that Celery does not send it again.
    """
    remaining = request.chain
    priority = None
    if app.conf.task_inherit_parent_priority:
        priority = (request.delivery_info or {}).get("priority")
    as_signature(remaining[-1], app=app).apply_async(
        chain=remaining[:-1], parent_id=request.id, root_id=request.root_id, priority=priority
    )


def dispatch_compensations(app: Celery, order_id: str, send: list[str], *, queue: str) -> None:
    """Send one task per compensation; ``send`` holds ``action:number`` (its message id)."""
    for entry in send:
        action, number = entry.rsplit(":", 1)
        app.signature(
            COMPENSATION_TASKS[action],
            args=(order_id,),
            queue=queue,
            immutable=True,
            ignore_result=True,
            task_id=message_id(order_id, action, int(number)),
        ).apply_async()

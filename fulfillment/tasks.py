"""Celery tasks: each runs one step of an order durably against its record in Redis.

A step task runs ``begin.lua`` (claim the attempt), the activity, then
``complete.lua`` (record the result and move the order on). The next step of
the chain is built by Celery as usual and pushed by ``complete.lua`` in the same
atomic step (the outbox, see :mod:`fulfillment.workflow`); where the broker is
not the order store's database, Celery's chain sends it after the task returns.
Every reply that says "this message is not the live one" (stale, busy, done,
finished) clears ``request.chain``, so a duplicate or superseded message never
continues a chain.

Retries: Celery's autoretry decides *what* is retried (any exception except a
:class:`~fulfillment.errors.BusinessError`); :meth:`StepTask.retry` decides *when*,
with the step's Temporal-style policy (Celery's own backoff is whole seconds with
jitter, see CELERY-NOTES.md), after recording the failed attempt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from . import activities, workflow
from .celery_app import app
from .errors import BusinessError, StaleAttempt, StepTimeout
from .fencing import AttemptToken, UndoToken
from .keys import message_id
from .models import Order
from .runtime import runtime
from .settings import get_settings
from .store import US
from .worker import act_on, worker_id

_settings = get_settings()


def describe(exc: BaseException) -> tuple[str, str]:
    """(error type, message) of an exception, as recorded in the history."""
    return type(exc).__name__, str(exc) or type(exc).__name__


def _skip(reply: dict[str, Any]) -> str:
    reason = reply.get("reason") or reply.get("status") or ""
    return f"skipped ({reply['v']}{': ' + reason if reason else ''})"


class StepTask(Task):
    """Base class of the payment, inventory and delivery tasks."""

    step = ""
    autoretry_for = (Exception,)
    dont_autoretry_for = (BusinessError,)
    max_retries = None
    retry_backoff = False
    acks_late = True
    ignore_result = True
    typing = False

    def retry(  # type: ignore[override]
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Record the failed attempt, then re-send it after the policy's delay."""
        rt = runtime()
        attempt = getattr(self.request, "fulfillment_attempt", None)
        if attempt is None:
            # Failed before an attempt began (e.g. Redis unreachable): send it again.
            return super().retry(
                exc=exc, countdown=rt.settings.retry_initial_interval, max_retries=None, throw=throw
            )
        order_id, epoch, number = attempt
        delay = rt.settings.policy(self.step).delay_after(number)
        error_type, message = describe(exc) if exc else ("Error", "retry requested")
        out = rt.store.retry(order_id, self.step, epoch, number, error_type, message, delay)
        if out["v"] == "retry":
            return super().retry(exc=exc, countdown=delay, max_retries=None, throw=throw)
        self.request.chain = None
        act_on(self.app, rt.settings, order_id, out)
        if out["v"] == "failed" and exc is not None:
            raise exc  # retries exhausted: the task fails with the last error
        raise Ignore()


def run_step(task: StepTask, order_id: str, epoch: int) -> str:
    """Run one attempt of ``task.step`` for the order, if this message is the live one."""
    rt = runtime()
    request = task.request
    step = task.step
    begun = rt.store.begin(order_id, step, epoch, request.id, worker_id())
    if begun["v"] != "run":
        request.chain = None
        return begun["result"] if begun["v"] == "done" else _skip(begun)

    number = int(begun["attempt"])
    request.fulfillment_attempt = (order_id, epoch, number)
    order = Order.model_validate_json(begun["order"])
    token = AttemptToken(order_id, step, epoch, number)
    context = activities.StepContext(order=order, token=token, services=rt.services)
    try:
        result = activities.ACTIVITIES[step](context)
    except SoftTimeLimitExceeded:
        limit = rt.settings.policy(step).time_limit
        raise StepTimeout(f"attempt exceeded its {limit:g}s time limit") from None
    except BusinessError as exc:
        request.chain = None
        out = rt.store.fail(order_id, step, epoch, number, exc.type, str(exc))
        act_on(task.app, rt.settings, order_id, out)
        raise

    held = None
    if request.chain and rt.holds_messages:
        held = workflow.held(lambda: workflow.continue_chain(task.app, request))
    out = rt.store.complete(order_id, step, epoch, number, result, held)
    if held is not None:
        request.chain = None  # complete.lua sent it, or the order did not move on
    if out["v"] != "next":
        request.chain = None
        act_on(task.app, rt.settings, order_id, out)
        if out["v"] == "stale":
            return f"{result} [discarded: {out['reason']}]"
    return result


def _step_options(step: str) -> dict[str, Any]:
    limit = _settings.policy(step).time_limit
    return {
        "bind": True,
        "base": StepTask,
        "name": workflow.TASK_NAMES[step],
        "step": step,
        "soft_time_limit": limit,
        "time_limit": limit + _settings.hard_time_limit_slack,
    }


@app.task(**_step_options("payment"))
def process_payment(self: StepTask, order_id: str, epoch: int = 1) -> str:
    """Charge the card (non-retryable: ``CreditCardExpired``)."""
    return run_step(self, order_id, epoch)


@app.task(**_step_options("inventory"))
def reserve_inventory(self: StepTask, order_id: str, epoch: int = 1) -> str:
    """Reserve stock (non-retryable: ``UnknownItem``, ``OutOfStock``)."""
    return run_step(self, order_id, epoch)


@app.task(**_step_options("delivery"))
def deliver_order(self: StepTask, order_id: str, epoch: int = 1) -> str:
    """Create the shipment."""
    return run_step(self, order_id, epoch)


# --- approval -----------------------------------------------------------------------

_plain = {
    "bind": True,
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (redis.RedisError, OSError),
    "max_retries": None,
    "default_retry_delay": 1,
}


def _iso(us: int | str) -> str:
    return datetime.fromtimestamp(int(us) / US, tz=UTC).isoformat(timespec="milliseconds")


@app.task(name=workflow.TASK_NAMES["approval"], **_plain)
def require_approval(self: Task, order_id: str, epoch: int = 1) -> str:
    """Enter the approval wait and start its countdown. The wait ends outside the chain."""
    self.request.chain = None
    rt = runtime()
    out = rt.store.enter_approval(order_id, epoch, self.request.id, worker_id())
    if out["v"] == "waiting":
        remaining = max(int(out["remaining_us"]), 0) / US
        approval_timeout.apply_async(
            (order_id,),
            {"epoch": epoch},
            countdown=remaining,
            queue=rt.settings.queue,
            task_id=message_id(order_id, "approval_timeout", epoch),
        )
        return f"Approval required: waiting until {_iso(out['deadline'])}"
    if out["v"] == "done":
        return str(out["result"])
    return _skip(out)


@app.task(name=workflow.APPROVAL_TIMEOUT_TASK, **_plain)
def approval_timeout(self: Task, order_id: str, epoch: int = 1) -> str:
    """The approval countdown: fail the order if nobody decided by the deadline."""
    rt = runtime()
    out = rt.store.decide(order_id, "timeout", source="countdown task", epoch=epoch)
    if out["v"] == "early":  # fired before the deadline on Redis's clock: wait the rest
        remaining = int(out["remaining_us"]) / US
        self.apply_async(
            (order_id,), {"epoch": epoch}, countdown=remaining, task_id=self.request.id
        )
        return f"not due yet: {remaining:.3f}s left"
    if out["v"] == "timed_out":
        return "Approval timed out"
    return _skip(out)


# --- compensations ------------------------------------------------------------------


class CompensationTask(Task):
    """Base of the compensation tasks: claim, undo, record; retried until they succeed.

    Only a claimed compensation calls the service (a forged or duplicated message
    finds nothing to claim and does nothing), and the service checks the claim as
    its fencing token.
    """

    action = ""
    autoretry_for = (redis.RedisError, OSError)  # before the claim: Redis unreachable
    max_retries = None
    default_retry_delay = 1
    acks_late = True
    ignore_result = True
    typing = False


def _compensate(task: Task, action: str, order_id: str) -> str:
    rt = runtime()
    claimed = rt.store.begin_compensation(order_id, action, task.request.id, worker_id())
    if claimed["v"] != "run":
        return _skip(claimed)
    token = UndoToken(order_id, action, int(claimed["claim"]))
    try:
        undone, summary = activities.COMPENSATIONS[action](rt.services, token)
    except StaleAttempt as exc:
        return f"skipped (stale: {exc})"
    except Exception as exc:
        delay = rt.settings.policy(workflow.COMPENSATES[action]).delay_after(token.claim)
        error_type, message = describe(exc)
        out = rt.store.compensation_failed(
            order_id, action, token.claim, error_type, message, delay
        )
        if out["v"] != "retry":
            return _skip(out)
        raise task.retry(exc=exc, countdown=delay, max_retries=None) from None
    out = rt.store.compensated(order_id, action, token.claim, undone, summary)
    act_on(task.app, rt.settings, order_id, out)
    return summary if out["v"] == "ok" else _skip(out)


@app.task(bind=True, base=CompensationTask, name=workflow.COMPENSATION_TASKS["refund_payment"])
def refund_payment(self: Task, order_id: str) -> str:
    """Refund the order's charge, if any."""
    return _compensate(self, "refund_payment", order_id)


@app.task(bind=True, base=CompensationTask, name=workflow.COMPENSATION_TASKS["release_inventory"])
def release_inventory(self: Task, order_id: str) -> str:
    """Give back the order's reserved stock, if any."""
    return _compensate(self, "release_inventory", order_id)


@app.task(bind=True, base=CompensationTask, name=workflow.COMPENSATION_TASKS["cancel_shipment"])
def cancel_shipment(self: Task, order_id: str) -> str:
    """Cancel the order's shipment, if any."""
    return _compensate(self, "cancel_shipment", order_id)

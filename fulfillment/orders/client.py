"""The order API: place orders, watch them, decide approvals (Temporal's client role).

Domain verbs over the engine's :class:`~fulfillment.engine.WorkflowClient`: the order
workflow's definition names its statuses, events and errors, so the engine answers in
the order's words already; this layer validates orders and returns order views.
Module-level functions use a default client configured from the environment; create
a :class:`FulfillmentClient` to talk to another deployment::

    from fulfillment import place_order, approve_order

    handle = place_order({"items": [...], "payment": {"creditCard": {...}}})
    print(handle.result(timeout=60))   # "Order fulfilled: ..."
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery import Celery

from ..engine import Engine, RunHandle, WorkflowClient, WorkflowRuntime, create_app, register
from .models import Order, parse_order
from .settings import Settings, get_settings
from .state import HistoryEvent, OrderStatus, OrderView
from .timeline import Timeline
from .workflow import needs_approval, order_workflow


class FulfillmentClient:
    """Talks to one deployment: its Redis (order state) and its broker (Celery)."""

    def __init__(self, settings: Settings | None = None, *, app: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self._app = app

    @cached_property
    def runtime(self) -> WorkflowRuntime:
        """The order workflow on this deployment's app."""
        app = self._app
        if app is None and self.settings is get_settings():
            from . import app as process_app  # the process's own app, built on first use

            app = process_app.app
        if app is None:
            app = create_app("fulfillment-client", self.settings, set_as_current=False)
        engine = Engine.of(app)
        runtime = engine.workflows.get("order") or register(app, order_workflow(self.settings))
        engine.check_overrides()
        return runtime

    @cached_property
    def orders(self) -> WorkflowClient:
        """The engine's client of the order workflow's runs."""
        return WorkflowClient(self.runtime)

    @property
    def store(self) -> Any:
        """The run store of the orders (reads, and the Redis client as ``store.client``)."""
        return self.runtime.store

    @property
    def app(self) -> Celery:
        return self.runtime.engine.app

    @property
    def _holds_messages(self) -> bool:
        return self.runtime.engine.holds_messages

    def place_order(
        self, order: Order | dict[str, Any] | str | bytes, *, approval_timeout: float | None = None
    ) -> OrderHandle:
        """Validate and store the order, then start it. Idempotent on the order id.

        Placing the same order (same id, same content) again returns a handle to the
        existing one; reusing an id for different content raises
        :class:`OrderConflict`. Raises :class:`InvalidOrder` naming the bad field.
        ``approval_timeout`` (seconds) overrides ``FULFILLMENT_APPROVAL_TIMEOUT``.
        """
        s = self.settings
        parsed = parse_order(order, max_bytes=s.max_order_bytes, max_items=s.max_items)
        self.orders.start(
            parsed,
            run_id=parsed.id,
            gate_timeouts={"approval": approval_timeout} if approval_timeout is not None else None,
            content_digest=parsed.digest(),
            event={"total": str(parsed.total), "items": len(parsed.items),
                   "needs_approval": needs_approval(parsed, s),
                   "threshold": str(s.approval_threshold)},
        )  # fmt: skip
        return OrderHandle(self, parsed.id)

    def handle(self, order_id: str) -> OrderHandle:
        """A handle to an existing order."""
        self.get_order(order_id)
        return OrderHandle(self, order_id)

    def get_order(self, order_id: str) -> OrderView:
        """The order's current state. Raises :class:`OrderNotFound`."""
        return OrderView.from_run(self.orders.get(order_id))

    def history(self, order_id: str) -> list[HistoryEvent]:
        """Every event of the order, oldest first."""
        return self.orders.history(order_id)

    def last_event(self, order_id: str, event_type: str) -> HistoryEvent | None:
        """The order's latest event of ``event_type``: what an action just did (the
        step it retried or resumed from), even if a worker has moved the order on."""
        return next((e for e in reversed(self.history(order_id)) if e.type == event_type), None)

    def timeline(self, order_id: str) -> Timeline:
        """Every step and every attempt of the order, rebuilt from its history."""
        return Timeline.of(self.orders.timeline(order_id))

    def ledger(self, order_id: str) -> dict[str, str]:
        """The simulated services' ledger of the order (charges, reservation, shipment)."""
        return self.store.client.hgetall(self.store.companion(order_id, "ledger"))

    def list_orders(
        self, status: str | None = None, *, retrying: bool = False, limit: int = 50
    ) -> list[OrderView]:
        """Newest orders first, optionally only one status or only those retrying."""
        views = self.orders.list(status, retrying=retrying, limit=limit)
        return [OrderView.from_run(v) for v in views]

    def wait(self, order_id: str, timeout: float | None = None) -> OrderView:
        """Block until the order is settled (final, its effects undone if it did not
        complete); return it. Raises :class:`ResultTimeout` after ``timeout`` seconds."""
        return OrderView.from_run(self.orders.wait(order_id, timeout))

    def wait_settled(
        self, order_id: str, timeout: float | None = None, *, known: bool = False
    ) -> dict[str, Any]:
        """Block until the order is settled; return how it ended (``status``, ``result``)."""
        return self.orders.wait_settled(order_id, timeout, known=known)

    def wait_for(
        self,
        order_id: str,
        condition: Callable[[OrderView], bool],
        timeout: float | None = None,
        what: str = "in the expected state",
    ) -> OrderView:
        """Block until ``condition(view)`` holds; return that view. Wakes on the order's
        own history (every change appends an event), without polling."""
        run = self.orders.wait_for(
            order_id, lambda v: condition(OrderView.from_run(v)), timeout, what
        )
        return OrderView.from_run(run)

    # --- decisions: each raises DecisionError when it cannot apply ---------------------

    def approve_order(self, order_id: str, *, by: str | None = None) -> OrderView:
        """Approve an order waiting for (or about to wait for) approval; it resumes at once."""
        return OrderView.from_run(self.orders.signal(order_id, "approval", "approve", by=by))

    def reject_order(
        self, order_id: str, *, reason: str | None = None, by: str | None = None
    ) -> OrderView:
        """Reject the order: it fails with type ``ApprovalRejected`` and the reason."""
        run = self.orders.signal(order_id, "approval", "reject", by=by, reason=reason or "")
        return OrderView.from_run(run)

    def cancel_order(
        self, order_id: str, *, reason: str | None = None, by: str | None = None
    ) -> OrderView:
        """Cancel an order that has not finished.

        Between steps (pending, queued, waiting for approval or for a retry) it is
        cancelled at once; while a step runs, that step finishes first. Effects already
        made (a charge, a reservation) are undone, the last first. For an order that
        needs approval, cancel is one of the decisions on its wait: once it was approved
        or rejected, cancel raises :class:`DecisionError`.
        """
        return OrderView.from_run(self.orders.cancel(order_id, reason=reason, by=by))

    def retry_now(self, order_id: str, *, by: str | None = None) -> OrderView:
        """Run the step that waits out its retry backoff at once (a new epoch)."""
        return OrderView.from_run(self.orders.retry_now(order_id, by=by))

    def resume_order(self, order_id: str, step: str, *, by: str | None = None) -> OrderView:
        """Run a failed or cancelled order again from ``step`` (Temporal's reset).

        An earlier step is kept only while its effect is still in place: a refunded
        payment is charged again before anything ships.
        """
        return OrderView.from_run(self.orders.resume(order_id, step, by=by))


class OrderHandle:
    """A placed order: ask for its status, wait for its result, read its history."""

    def __init__(self, client: FulfillmentClient, order_id: str) -> None:
        self.client = client
        #: the order's id
        self.id = order_id

    def __repr__(self) -> str:
        return f"<OrderHandle {self.id}>"

    def status(self) -> OrderStatus:
        return self.client.get_order(self.id).status

    def view(self) -> OrderView:
        return self.client.get_order(self.id)

    def history(self) -> list[HistoryEvent]:
        return self.client.history(self.id)

    def result(self, timeout: float | None = None) -> str:
        """Wait for the order to settle; return ``Order fulfilled: ...`` or raise.

        An order that fails or is cancelled first undoes its effects (it is
        ``compensating`` meanwhile): this returns (raises) only once they are undone.
        Raises :class:`OrderFailed` or :class:`OrderCancelled` (both
        :class:`OrderNotFulfilled`, with ``type``, ``message``, ``compensations``; a
        cancelled order is not an ``OrderFailed``), or :class:`ResultTimeout`.
        """
        return RunHandle(self.client.orders, self.id).result(timeout)


# --- module-level API on the default client ---------------------------------------------

_default: FulfillmentClient | None = None


def default_client() -> FulfillmentClient:
    global _default
    if _default is None:
        _default = FulfillmentClient()
    return _default


def place_order(
    order: Order | dict[str, Any] | str | bytes, *, approval_timeout: float | None = None
) -> OrderHandle:
    """Place an order on the default deployment. See :meth:`FulfillmentClient.place_order`."""
    return default_client().place_order(order, approval_timeout=approval_timeout)


def get_order(order_id: str) -> OrderView:
    """The order's current state. Raises :class:`OrderNotFound`."""
    return default_client().get_order(order_id)


def approve_order(order_id: str, *, by: str | None = None) -> OrderView:
    """Approve a waiting order. Raises :class:`DecisionError` if already decided."""
    return default_client().approve_order(order_id, by=by)


def reject_order(order_id: str, *, reason: str | None = None, by: str | None = None) -> OrderView:
    """Reject a waiting order. Raises :class:`DecisionError` if already decided."""
    return default_client().reject_order(order_id, reason=reason, by=by)


def cancel_order(order_id: str, *, reason: str | None = None, by: str | None = None) -> OrderView:
    """Cancel an unfinished order. Raises :class:`DecisionError` if it already finished."""
    return default_client().cancel_order(order_id, reason=reason, by=by)


def retry_now(order_id: str, *, by: str | None = None) -> OrderView:
    """Run a step waiting out its retry backoff at once. See :meth:`FulfillmentClient.retry_now`."""
    return default_client().retry_now(order_id, by=by)


def resume_order(order_id: str, step: str, *, by: str | None = None) -> OrderView:
    """Run a failed or cancelled order again from ``step``. See
    :meth:`FulfillmentClient.resume_order`."""
    return default_client().resume_order(order_id, step, by=by)


__all__ = [
    "FulfillmentClient",
    "OrderHandle",
    "OrderStatus",
    "approve_order",
    "cancel_order",
    "default_client",
    "get_order",
    "place_order",
    "reject_order",
    "resume_order",
    "retry_now",
]

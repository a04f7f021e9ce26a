"""The client API: place orders, watch them, decide approvals (Temporal's client role).

Module-level functions use a default client configured from the environment;
create a :class:`FulfillmentClient` to talk to another deployment::

    from fulfillment import place_order, approve_order

    handle = place_order({"items": [...], "payment": {"creditCard": {...}}})
    print(handle.result(timeout=60))   # "Order fulfilled: ..."
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery import Celery

from . import workflow
from .connection import redis_client, resolve_redis_url
from .errors import (
    DecisionError,
    InvalidArgument,
    OrderCancelled,
    OrderConflict,
    OrderFailed,
    OrderNotFound,
    ResultTimeout,
)
from .models import Order, parse_order, printable
from .settings import Settings, get_settings
from .state import HistoryEvent, OrderStatus, OrderView
from .store import OrderStore
from .timeline import Timeline
from .timeline import build as build_timeline
from .worker import act_on

log = logging.getLogger(__name__)


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _check_text(name: str, value: str, limit: int) -> None:
    """Who decided and why are shown in terminals and web pages: one plain line."""
    if len(value) > limit:
        raise InvalidArgument(f"invalid {name}: longer than {limit} characters")
    try:
        printable(value)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {name}: {exc}") from None


class FulfillmentClient:
    """Talks to one deployment: its Redis (order state) and its broker (Celery)."""

    def __init__(self, settings: Settings | None = None, *, app: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self._app = app

    @cached_property
    def store(self) -> OrderStore:
        return OrderStore(
            redis_client(resolve_redis_url(self.settings), self.settings.sentinel_master),
            self.settings,
        )

    @cached_property
    def app(self) -> Celery:
        if self._app is not None:
            return self._app
        if self.settings is get_settings():
            from .celery_app import app

            return app
        from .celery_app import create_app

        return create_app(self.settings)

    # --- placing and reading --------------------------------------------------------

    def place_order(
        self, order: Order | dict[str, Any] | str | bytes, *, approval_timeout: float | None = None
    ) -> OrderHandle:
        """Validate and store the order, then start it. Idempotent on the order id.

        Placing the same order (same id, same content) again returns a handle to
        the existing one; reusing an id for different content raises
        :class:`OrderConflict`. Raises :class:`InvalidOrder` naming the bad field.
        ``approval_timeout`` (seconds) overrides ``FULFILLMENT_APPROVAL_TIMEOUT``.
        """
        s = self.settings
        parsed = parse_order(order, max_bytes=s.max_order_bytes, max_items=s.max_items)
        timeout = s.approval_timeout
        if approval_timeout is not None:
            timeout = s.check_approval_timeout(approval_timeout)
        needs_approval = parsed.total > s.approval_threshold
        steps = workflow.steps_for(needs_approval)

        def send_first_step() -> None:
            workflow.dispatch(self.app, parsed.id, steps[0], 1, parsed.summary(), queue=s.queue)

        # The first message goes out with the order (create.lua pushes it) where it can.
        held = workflow.held(send_first_step) if self._holds_messages else None
        out = self.store.create(parsed, steps, needs_approval, timeout, held)
        if out["v"] == "conflict":
            raise OrderConflict(
                f"order id {parsed.id!r} is already used by a different order "
                f"(status {out['status']})"
            )
        if out["v"] == "created" and held is None:
            try:
                send_first_step()
            except Exception:  # stored durably: the watchdog sends it once the broker is back
                log.warning(
                    "order %s stored but not yet sent; the watchdog will send it", parsed.id
                )
        return OrderHandle(self, parsed.id)

    @cached_property
    def _holds_messages(self) -> bool:
        return workflow.holds_messages(self.app, resolve_redis_url(self.settings))

    def handle(self, order_id: str) -> OrderHandle:
        """A handle to an existing order."""
        self.get_order(order_id)
        return OrderHandle(self, order_id)

    def get_order(self, order_id: str) -> OrderView:
        """The order's current state. Raises :class:`OrderNotFound`."""
        record = self.store.record(order_id)
        if not record:
            raise OrderNotFound(order_id)
        return OrderView.from_record(record)

    def history(self, order_id: str) -> list[HistoryEvent]:
        """Every event of the order, oldest first."""
        events = [HistoryEvent.from_entry(*e) for e in self.store.history(order_id)]
        if not events and not self.store.record(order_id):
            raise OrderNotFound(order_id)
        return events

    def timeline(self, order_id: str) -> Timeline:
        """Every step and every attempt of the order, rebuilt from its history."""
        return build_timeline(self.get_order(order_id), self.history(order_id))

    def list_orders(
        self, status: str | None = None, *, retrying: bool = False, limit: int = 50
    ) -> list[OrderView]:
        """Newest orders first, optionally only one status or only those retrying."""
        if status is not None and status not in OrderStatus.__members__.values():
            allowed = ", ".join(s.value for s in OrderStatus)
            raise ValueError(f"unknown status {status!r}; statuses are {allowed}")
        ids = self.store.order_ids(status, retrying=retrying, limit=limit)
        return [OrderView.from_record(r) for r in self.store.records(ids) if r]

    def wait(self, order_id: str, timeout: float | None = None) -> OrderView:
        """Block until the order is finished and its compensations ran; return it.

        Raises :class:`OrderNotFound`, or :class:`ResultTimeout` after ``timeout``
        seconds (None: no limit).
        """
        self.wait_settled(order_id, timeout)
        return self.get_order(order_id)

    def wait_settled(
        self, order_id: str, timeout: float | None = None, *, known: bool = False
    ) -> dict[str, Any]:
        """Block until the order is settled; return how it ended (``status``, ``result``).

        Blocks on the order's doorbell (``settle`` in ``lua/lib.lua``), so it
        wakes once, when the order is settled, not on each of its events.
        ``known``: the order was seen to exist (a handle), so a missing order is
        only noticed after the first block of at most 5 s.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not known and self.store.status(order_id) is None:
            raise OrderNotFound(order_id)
        while True:
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            # at most 5 s at a time: then look again (e.g. the order expired meanwhile)
            outcome = self.store.wait_settled(order_id, max(min(remaining, 5.0), 0.001))
            if outcome is not None:
                return outcome
            status = self.store.status(order_id)
            if status is None:
                raise OrderNotFound(order_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(
                    f"order {order_id} not finished after {timeout}s (status {status})"
                )

    def wait_for(
        self,
        order_id: str,
        condition: Callable[[OrderView], bool],
        timeout: float | None = None,
        what: str = "in the expected state",
    ) -> OrderView:
        """Block until ``condition(view)`` holds; return that view.

        Wakes on the order's own history stream (XREAD BLOCK): every state change
        appends an event, so this returns as soon as it can, without polling.
        Raises :class:`ResultTimeout` after ``timeout`` seconds (None: no limit).
        To wait for the order to finish, :meth:`wait` is cheaper: it wakes once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        record, last = self.store.snapshot(order_id)
        while True:
            if not record:
                raise OrderNotFound(order_id)
            view = OrderView.from_record(record)
            if condition(view):
                return view
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(
                    f"order {order_id} not {what} after {timeout}s (status {view.status.value})"
                )
            # news or a quiet period (e.g. the order expired meanwhile): look again
            last = (
                self.store.wait_for_event(order_id, last, int(min(remaining, 5.0) * 1000) or 1)
                or last
            )
            record = self.store.record(order_id)

    # --- decisions ------------------------------------------------------------------------

    def _decide(self, order_id: str, decision: str, by: str, reason: str) -> OrderView:
        _check_text("by", by, 200)
        _check_text("reason", reason, 1000)
        out = self.store.decide(order_id, decision, by=by, reason=reason)
        verdict = out["v"]
        if verdict == "missing":
            raise OrderNotFound(order_id)
        if verdict == "finished":
            done = f" (approval {out['decision']} by {out['by']})" if out.get("decision") else ""
            raise DecisionError(
                f"cannot {decision} order {order_id}: it is already {out['status']}{done}"
            )
        if verdict == "decided":
            raise DecisionError(
                f"cannot {decision} order {order_id}: approval already decided "
                f"({out['decision']} by {out['by']})"
            )
        if verdict == "not_required":
            raise DecisionError(
                f"cannot {decision} order {order_id}: it does not need approval "
                f"(total at or under the threshold)"
            )
        act_on(self.app, self.settings, order_id, out)
        return self.get_order(order_id)

    def approve_order(self, order_id: str, *, by: str | None = None) -> OrderView:
        """Approve an order waiting for (or about to wait for) approval; it resumes at once."""
        return self._decide(order_id, "approve", by or _default_actor(), "")

    def reject_order(
        self, order_id: str, *, reason: str | None = None, by: str | None = None
    ) -> OrderView:
        """Reject the order: it fails with type ``ApprovalRejected`` and the reason."""
        actor = by or _default_actor()
        return self._decide(order_id, "reject", actor, reason or f"Rejected by {actor}")

    def cancel_order(
        self, order_id: str, *, reason: str | None = None, by: str | None = None
    ) -> OrderView:
        """Cancel an order that has not finished.

        Between steps (pending, queued, waiting for approval or for a retry) it is
        cancelled at once; while a step runs, that step finishes first. Effects
        already made (a charge, a reservation) are compensated. For an order that
        needs approval, cancel is one of the decisions on its wait: once it was
        approved or rejected, cancel raises :class:`DecisionError`.
        """
        actor = by or _default_actor()
        return self._decide(order_id, "cancel", actor, reason or f"Cancelled by {actor}")


class OrderHandle:
    """A placed order: ask for its status, wait for its result, read its history."""

    def __init__(self, client: FulfillmentClient, order_id: str) -> None:
        self.client = client
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
        """Wait for the order; return ``Order fulfilled: ...`` or raise.

        Raises :class:`OrderFailed` (with ``type``, ``message``, ``compensations``),
        :class:`OrderCancelled`, or :class:`ResultTimeout`.
        """
        outcome = self.client.wait_settled(self.id, timeout, known=True)
        if outcome["status"] == OrderStatus.COMPLETED:
            return str(outcome["result"])
        view = self.client.get_order(self.id)
        failure = view.failure
        ftype = failure.type if failure else view.status.value
        message = failure.message if failure else ""
        comps = view.compensated
        if view.status is OrderStatus.CANCELLED:
            raise OrderCancelled(self.id, ftype, message, comps)
        raise OrderFailed(self.id, ftype, message, comps)


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
]

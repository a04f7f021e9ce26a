"""Tornado handlers of the Orders view, built on Flower's own ``BaseHandler``.

Pages: ``/orders`` (the list) and ``/orders/<id>`` (one order's story); the JSON API
beside them (``/api/orders``, ``/api/orders/<id>``: the shapes of ``fulfillment
list --json`` and ``fulfillment show --json``); and the operations, POSTed from the
pages' forms (``/orders/<id>/<action>``, ``/orders/bulk``) or by API clients
(``/api/orders/<id>/<action>``). Every handler requires Flower's authentication
when it is configured; every POST must carry the XSRF token, whatever the auth.
"""

from __future__ import annotations

import json
from base64 import b64decode
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

import tornado.web
from flower.views import BaseHandler
from tornado.web import url

from ...engine.errors import WorkflowError
from ...orders.client import FulfillmentClient
from ...orders.errors import FulfillmentError
from ..render import duration, event_text
from . import data
from .chart import stamp

#: operations on one order, by URL name
ACTIONS = ("approve", "reject", "cancel", "retry", "resume")
#: operations on a selection of orders
BULK_ACTIONS = ("approve", "reject", "cancel", "retry", "resume")
#: what a bulk action did, said of the orders it did it to
BULK_DONE = {"approve": "approved", "reject": "rejected", "cancel": "cancelled",
             "retry": "retried now", "resume": "resumed"}  # fmt: skip
BULK_LIMIT = 500
OPERATIONS_NEED_AUTH = (
    "operations on orders need Flower's authentication (--basic-auth or --auth), "
    "or FLOWER_UNAUTHENTICATED_API=true"
)


class OrdersHandler(BaseHandler):
    """Base of the view's handlers: the order client, who is acting, strict XSRF."""

    @cached_property
    def orders(self) -> FulfillmentClient:
        return FulfillmentClient(app=self.capp)

    def actor(self) -> str:
        """The authenticated Flower user (basic auth's name, the OAuth email), for the history."""
        options = self.application.options
        if options.basic_auth:
            header = self.request.headers.get("Authorization", "")
            try:
                _scheme, credentials = header.split()
                return b64decode(credentials).decode().split(":", 1)[0] + " (flower)"
            except ValueError:
                return "flower"
        user = self.current_user
        return f"{user} (flower)" if isinstance(user, str) else "flower (no auth)"

    def prepare(self) -> None:
        if self.request.method == "GET":
            _ = self.xsrf_token  # sets the _xsrf cookie, for forms and API clients alike

    def check_xsrf_cookie(self) -> None:
        super().check_xsrf_cookie()  # Flower's cross-site and origin checks
        # Flower skips the token under basic auth; a form of this view never does.
        tornado.web.RequestHandler.check_xsrf_cookie(self)

    @property
    def auth_configured(self) -> bool:
        options = self.application.options
        return bool(options.basic_auth or options.auth)

    @property
    def can_operate(self) -> bool:
        """Operations change orders: only behind Flower's authentication (or where its
        operator opened the API to everyone, as Flower's own API asks)."""
        return self.auth_configured or self.unauthenticated_api

    def window(self, args: Any = None) -> data.Window:
        """The list's time range (``since``, ``until``: ISO times, UTC unless they say) and
        failure type (``failure``), from the query (or ``args``: a form's)."""
        get = args or self.get_query_argument
        moments: list[datetime | None] = []
        for name in ("since", "until"):
            raw = get(name, "").strip()
            if not raw:
                moments.append(None)
                continue
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError:
                raise tornado.web.HTTPError(
                    400, f"{name} must be an ISO time, not {raw!r}"
                ) from None
            moments.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        return data.Window(moments[0], moments[1], get("failure", "").strip())

    def require_operator(self) -> None:
        if not self.can_operate:
            raise tornado.web.HTTPError(403, OPERATIONS_NEED_AUTH)

    def number(self, name: str, default: int, low: int, high: int) -> int:
        """A whole-number query argument within [low, high], or 400 naming it."""
        raw = self.get_query_argument(name, "") or str(default)
        try:
            value = int(raw)
        except ValueError:
            raise tornado.web.HTTPError(
                400, f"{name} must be a whole number, not {raw!r}"
            ) from None
        return min(max(value, low), high)

    def act(self, order_id: str, action: str) -> str:
        """Run one operation as the current user; a one-line outcome, or FulfillmentError."""
        by = self.actor()
        client = self.orders
        if action == "approve":
            view = client.approve_order(order_id, by=by)
            return f"{order_id}: approved by {by}; {view.status.value}"
        if action == "reject":
            reason = self.get_body_argument("reason", "", strip=True) or None
            client.reject_order(order_id, reason=reason, by=by)
            return f"{order_id}: rejected"
        if action == "cancel":
            reason = self.get_body_argument("reason", "", strip=True) or None
            view = client.cancel_order(order_id, reason=reason, by=by)
            if view.status.value == "compensating":
                return f"{order_id}: cancelled; undoing its effects before it reads cancelled"
            done = "cancelled" if view.status.value == "cancelled" else "cancel requested"
            return f"{order_id}: {done}"
        if action == "retry":
            client.retry_now(order_id, by=by)
            retried = client.last_event(order_id, "retried_now")  # it may have moved on since
            return f"{order_id}: {retried.data['step'] if retried else 'its step'} runs again now"
        if action == "resume":
            step = self.get_body_argument("step", "", strip=True)
            client.resume_order(order_id, step, by=by)
            resumed = client.last_event(order_id, "order_resumed")
            where = f"{resumed.data['step']} (epoch {resumed.data['epoch']})" if resumed else step
            return f"{order_id}: resumed from {where}"
        raise tornado.web.HTTPError(404)


class OrdersView(OrdersHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        status = self.get_query_argument("status", "") or None
        query = self.get_query_argument("q", "")
        page = self.number("page", 1, 1, 10**6)
        per_page = self.number("per", 50, 1, 500)
        window = self.window()
        if status is not None and status not in data.FILTERS:
            raise tornado.web.HTTPError(400, f"unknown status {status!r}")
        self.render(
            "orders.html",
            active_tab="orders",
            listing=data.list_orders(self.orders, status, query, page, per_page, window),
            window=window,
            failures=data.FAILURES,
            counts=data.status_counts(self.orders),
            filters=data.FILTERS,
            status=status or "",
            query=query,
            message=self.get_query_argument("done", ""),
            error=self.get_query_argument("error", ""),
            status_of=data.status_of,
            bulk_actions=BULK_ACTIONS,
            steps=data.STEPS,
            link=self._link,
            can_operate=self.can_operate,
            needs_auth=OPERATIONS_NEED_AUTH,
        )

    def _link(self, **params: Any) -> str:
        keep = {
            name: self.get_query_argument(name, "")
            for name in ("status", "q", "per", "since", "until", "failure")
        }
        keep.update({k: str(v) for k, v in params.items()})
        return self.reverse_url("orders") + "?" + urlencode({k: v for k, v in keep.items() if v})


class OrderView(OrdersHandler):
    @tornado.web.authenticated
    def get(self, order_id: str) -> None:
        try:
            detail = data.detail(self.orders, order_id)
        except FulfillmentError as exc:
            raise tornado.web.HTTPError(404, str(exc)) from None
        self.render(
            "order.html",
            active_tab="orders",
            detail=detail,
            view=detail.timeline.order,
            message=self.get_query_argument("done", ""),
            error=self.get_query_argument("error", ""),
            json=json,
            stamp=stamp,
            duration=duration,
            event_text=event_text,
            can_operate=self.can_operate,
            needs_auth=OPERATIONS_NEED_AUTH,
        )


class OrderAction(OrdersHandler):
    """A form's operation on one order; back to the order page with the outcome."""

    @tornado.web.authenticated
    def post(self, order_id: str, action: str) -> None:
        self.require_operator()
        try:
            outcome = {"done": self.act(order_id, action)}
        except (WorkflowError, ValueError) as exc:
            outcome = {"error": str(exc).splitlines()[0]}
        self.redirect(self.reverse_url("order", order_id) + "?" + urlencode(outcome))


class BulkAction(OrdersHandler):
    """One operation on the selected orders (or every order the filter matches)."""

    @tornado.web.authenticated
    def post(self) -> None:
        self.require_operator()
        action = self.get_body_argument("action", "")
        if action not in BULK_ACTIONS:
            raise tornado.web.HTTPError(400, f"unknown bulk action {action!r}")
        ids = self.get_body_arguments("id")
        if self.get_body_argument("all", "") == "1":
            status = self.get_body_argument("status", "") or None
            query = self.get_body_argument("q", "")
            window = self.window(self.get_body_argument)
            listing = data.list_orders(self.orders, status, query, 1, BULK_LIMIT, window)
            ids = [o.id for o in listing.orders]
        done, refused = 0, []
        for order_id in ids[:BULK_LIMIT]:
            try:
                self.act(order_id, action)
                done += 1
            except (WorkflowError, ValueError) as exc:
                refused.append(f"{order_id}: {str(exc).splitlines()[0]}")
        outcome: dict[str, str] = {"done": f"{done} {BULK_DONE[action]}, {len(refused)} refused"}
        if refused:
            outcome["error"] = "; ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
        back = self.get_body_argument("back", "") or self.reverse_url("orders")
        if not back.startswith(self.reverse_url("orders")):
            back = self.reverse_url("orders")
        separator = "&" if "?" in back else "?"
        self.redirect(back + separator + urlencode(outcome))


# --- the JSON API ------------------------------------------------------------------------


class ApiHandler(OrdersHandler):
    """The JSON API. It reads what the pages show, to whoever may see the pages; its
    operations need what the forms need (Flower's authentication, or
    ``FLOWER_UNAUTHENTICATED_API``). An API client that authenticates (an
    ``Authorization`` header) may POST without the XSRF token, past Flower's
    cross-site checks, as it may to Flower's own API."""

    def check_xsrf_cookie(self) -> None:
        if self.request.headers.get("Authorization"):
            BaseHandler.check_xsrf_cookie(self)  # Sec-Fetch-Site and Origin
            if self.get_body_argument("_xsrf", None) is None:
                return
        super().check_xsrf_cookie()


class OrdersApi(ApiHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        status = self.get_query_argument("status", "") or None
        query = self.get_query_argument("q", "")
        limit = self.number("limit", 50, 1, 1000)
        offset = self.number("offset", 0, 0, 10**9)
        if status is not None and status not in data.FILTERS:
            raise tornado.web.HTTPError(400, f"unknown status {status!r}")
        if offset % limit:
            raise tornado.web.HTTPError(400, "offset must be a multiple of limit")
        page = offset // limit + 1
        listing = data.list_orders(self.orders, status, query, page, limit, self.window())
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps([o.model_dump(mode="json") for o in listing.orders]))


class OrderApi(ApiHandler):
    @tornado.web.authenticated
    def get(self, order_id: str) -> None:
        try:
            timeline = self.orders.timeline(order_id)
        except FulfillmentError as exc:
            raise tornado.web.HTTPError(404, str(exc)) from None
        self.set_header("Content-Type", "application/json")
        self.write(timeline.model_dump_json())


class OrderActionApi(ApiHandler):
    """``POST /api/orders/<id>/<action>``: ``{"ok": true, "message": ...}``, or 409 and why."""

    @tornado.web.authenticated
    def post(self, order_id: str, action: str) -> None:
        self.require_operator()
        self.set_header("Content-Type", "application/json")
        try:
            message = self.act(order_id, action)
        except (WorkflowError, ValueError) as exc:
            self.set_status(409)
            self.write(json.dumps({"ok": False, "error": str(exc).splitlines()[0]}))
            return
        self.write(json.dumps({"ok": True, "message": message}))


_ID = r"([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})"
_ACTION = r"(" + "|".join(ACTIONS) + r")"

HANDLERS = [
    url(r"/orders", OrdersView, name="orders"),
    url(r"/orders/bulk", BulkAction, name="orders-bulk"),
    url(rf"/orders/{_ID}/{_ACTION}", OrderAction, name="order-action"),
    url(rf"/orders/{_ID}", OrderView, name="order"),
    (r"/api/orders", OrdersApi),
    (rf"/api/orders/{_ID}/{_ACTION}", OrderActionApi),
    (rf"/api/orders/{_ID}", OrderApi),
]

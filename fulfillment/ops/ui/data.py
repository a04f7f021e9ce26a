"""What the Orders view shows, read from the order store (no Tornado here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...engine.policy import StepPolicy
from ...engine.replies import US
from ...orders.client import FulfillmentClient
from ...orders.models import Order
from ...orders.state import OrderStatus, OrderView
from ...orders.timeline import Timeline
from .chart import Chart, chart

#: the filters the list offers: every status, and "retrying"
FILTERS = (*(s.value for s in OrderStatus), "retrying")
#: the steps an order can be resumed from, in order
STEPS = ("payment", "inventory", "delivery")
#: how many of the newest orders a search looks through
SEARCH_DEPTH = 2000


def status_counts(client: FulfillmentClient) -> dict[str, int]:
    """Orders per status (and retrying), from the status indexes: one pipeline (one round
    trip per node of a cluster, over every bucket)."""
    counts = client.orders.counts()
    return {s.value: counts.get(s.value, 0) for s in OrderStatus} | {"retrying": counts["retrying"]}


def _ids(client: FulfillmentClient, status: str | None, limit: int) -> list[str]:
    if status == "retrying":
        return client.store.run_ids(retrying=True, limit=limit)
    run_status = OrderStatus(status).run_status if status else None
    return client.store.run_ids(run_status, limit=limit)


def _matches(order_id: str, summary: dict[str, Any], needle: str) -> bool | None:
    """Does the order match? None: the summary names only some of its lines (an order
    placed by an earlier version): look further."""
    if needle in order_id.lower():
        return True
    if any(needle in str(line[0]).lower() for line in summary.get("lines", ())):
        return True
    return None if summary.get("more") else False


def _matches_input(raw: str | None, needle: str) -> bool:
    if not raw:
        return False
    return any(needle in item.item_name.lower() for item in Order.model_validate_json(raw).items)


@dataclass
class Page:
    """One page of the list."""

    orders: list[OrderView]
    summaries: dict[str, dict[str, Any]]
    page: int
    per_page: int
    more: bool
    searched: int


#: the failure types the list offers to filter by (any other can be typed in)
FAILURES = ("CreditCardExpired", "UnknownItem", "OutOfStock", "ApprovalRejected",
            "ApprovalTimeout", "OrderCancelled", "AttemptLost", "StepTimeout")  # fmt: skip


@dataclass(frozen=True)
class Window:
    """Orders placed in a time range, and/or that failed with a type: filters the list."""

    since: datetime | None = None
    until: datetime | None = None
    failure: str = ""

    def __bool__(self) -> bool:
        return bool(self.since or self.until or self.failure)

    def keep(self, client: FulfillmentClient, ids: list[str]) -> list[str]:
        """The ``ids`` that fall in the window (newest first, as given)."""
        store = client.store
        if self.since or self.until:
            low = self.since.timestamp() * US if self.since else float("-inf")
            high = self.until.timestamp() * US if self.until else float("inf")
            created = store.fields(ids, "created")
            ids = [i for i, c in zip(ids, created, strict=True) if c and low <= int(c) <= high]
        if self.failure:
            types = store.fields(ids, "failure:type")
            ids = [i for i, t in zip(ids, types, strict=True) if t == self.failure]
        return ids


def list_orders(
    client: FulfillmentClient, status: str | None, query: str, page: int, per_page: int,
    window: Window | None = None,
) -> Page:  # fmt: skip
    """Newest first, filtered by status, by a search on the order id or an item name, and
    by when the order was placed and how it failed (``window``)."""
    if status and status not in FILTERS:
        raise ValueError(f"unknown status {status!r}")
    needle = query.strip().lower()
    skip = (page - 1) * per_page
    store = client.store
    window = window or Window()
    if needle or window:
        ids = window.keep(client, _ids(client, status, SEARCH_DEPTH))
        verdicts = [
            _matches(i.lower(), json.loads(s), needle) if s else False
            for i, s in zip(ids, store.fields(ids, "summary"), strict=True)
        ]
        unsure = [i for i, v in zip(ids, verdicts, strict=True) if v is None]
        if unsure:
            inputs = dict(zip(unsure, store.fields(unsure, "input"), strict=True))
            verdicts = [
                _matches_input(inputs[i], needle) if v is None else v
                for i, v in zip(ids, verdicts, strict=True)
            ]
        found = [i for i, v in zip(ids, verdicts, strict=True) if v]
        searched = min(len(ids), SEARCH_DEPTH)
        ids = found[skip : skip + per_page + 1]
    else:
        searched = 0
        ids = _ids(client, status, skip + per_page + 1)[skip:]
    more = len(ids) > per_page
    records = [r for r in client.store.records(ids[:per_page]) if r]
    orders = [OrderView.from_record(r) for r in records]
    summaries = {r["id"]: json.loads(r.get("summary") or "{}") for r in records}
    return Page(orders, summaries, page, per_page, more, searched)


@dataclass
class Detail:
    """Everything the order page shows."""

    timeline: Timeline
    order: Order | None
    approval_requested_at: datetime | None
    steps: list[str]
    resumable: list[str]
    #: the order's chart: every attempt, wait and undo on one time axis
    chart: Chart
    #: each step's policy, as people read it (from the order's own plan)
    policies: dict[str, str]


def policy_text(spec: str | None) -> str:
    """A step's policy from the order's plan: ``5 s per attempt; retries 1 s, x2, up to
    100 s, no limit``."""
    if not spec:
        return ""
    p = StepPolicy.from_spec(spec)
    attempts = f"at most {p.maximum_attempts} attempts" if p.maximum_attempts else "no limit"
    never = ""
    if p.non_retryable_error_types:
        never = "; never retried: " + ", ".join(p.non_retryable_error_types)
    retries = (f"retries after {p.initial_interval:g} s, x{p.backoff_coefficient:g}, up to "
               f"{p.maximum_interval:g} s, {attempts}{never}")  # fmt: skip
    return f"{p.time_limit:g} s per attempt; {retries}"


def detail(client: FulfillmentClient, order_id: str) -> Detail:
    timeline = client.timeline(order_id)
    record = client.store.record(order_id)
    order = None
    if record.get("input"):
        order = Order.model_validate_json(record["input"])
    requested = next(
        (e.at for e in reversed(timeline.events) if e.type == "approval_requested"), None
    )
    view = timeline.order
    steps = [s.name for s in view.steps]
    resumable = steps if view.status.value in ("failed", "cancelled") and view.settled else []
    policies = {s: policy_text(record.get(f"p:{s}")) for s in steps if s != "approval"}
    return Detail(timeline, order, requested, steps, resumable, chart(timeline), policies)


def status_of(view: OrderView) -> str:
    """``retrying`` when a failed step waits for its next attempt, else the status."""
    return "retrying" if view.retrying else view.status.value


__all__ = ["FILTERS", "Detail", "Page", "detail", "list_orders", "status_counts", "status_of"]

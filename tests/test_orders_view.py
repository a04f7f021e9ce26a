"""The Orders view inside Flower: pages, JSON API, operations, metrics, auth, and what
Flower's own task view shows of our tasks. Real Flower, real workers, real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from fulfillment.orders.services import set_fault
from fulfillment.orders.services.faults import clear_faults
from fulfillment.orders.state import OrderStatus

from .flower import STEP_TASKS, Flower, orders_stack, settled_in_flower
from .support import EXPENSIVE, Deployment, order_doc, wait_until

CLEAR = re.compile(r"4111[ -]?1111[ -]?1111[ -]?1111")


@pytest.fixture
def live(deploy) -> Iterator[tuple[Deployment, Flower]]:  # type: ignore[no-untyped-def]
    with orders_stack(deploy) as stack:
        yield stack


def api(flower: Flower, path: str) -> object:
    status, body = flower.request("GET", path)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def act(flower: Flower, order_id: str, action: str, **form: str) -> dict[str, object]:
    status, body = flower.request("POST", f"/api/orders/{order_id}/{action}", form)
    reply = json.loads(body)
    assert (status == 200) == reply["ok"], (status, reply)
    return reply


def test_nothing_is_shown_or_changed_without_credentials(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    for path in ("/orders", f"/orders/{oid}", "/api/orders", f"/api/orders/{oid}"):
        status, body = flower.request("GET", path, auth=False)
        assert status == 401 and oid not in body, (path, status)
    form = {"action": "approve", "id": oid}
    for path in (f"/orders/{oid}/approve", f"/api/orders/{oid}/approve", "/orders/bulk"):
        status, _ = flower.request("POST", path, form, auth=False)
        assert status == 401, (path, status)
        # from another site (what a forged form in a browser sends), even with credentials
        status, _ = flower.request("POST", path, form, xsrf=False,
                                   headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert status == 403, (path, status)
    for path in (f"/orders/{oid}/approve", "/orders/bulk"):
        # a form without the XSRF token is refused, whoever sends it
        status, _ = flower.request("POST", path, form, xsrf=False)
        assert status == 403, (path, status)
    view = d.client.get_order(oid)
    assert view.status is OrderStatus.AWAITING_APPROVAL and view.approval.decision is None
    assert "approval_decided" not in [e.type for e in d.client.history(oid)]


def test_list_and_order_pages_tell_the_story(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    set_fault(d.redis, "inventory", attempts=1, order_id=oid)
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.retrying, 30, "retrying")
    failed = f"{oid}-x"
    d.client.place_order(order_doc(order_id=failed, expiration="01/20"))
    d.wait(failed)

    _, page = flower.request("GET", "/orders")
    assert 'href="/orders"' in page and ">Orders</a>" in page  # in Flower's navbar
    assert oid in page and failed in page and not CLEAR.search(page)
    _, retrying = flower.request("GET", "/orders?status=retrying")
    assert f'data-order="{oid}"' in retrying and f'data-order="{failed}"' not in retrying
    _, by_item = flower.request("GET", "/orders?q=charging+dock")
    assert f'data-order="{oid}"' in by_item
    _, by_id = flower.request("GET", f"/orders?q={failed}")
    assert f'data-order="{failed}"' in by_id and f'data-order="{oid}"' not in by_id
    status, _ = flower.request("GET", "/orders?status=bogus")
    assert status == 400

    _, detail = flower.request("GET", f"/orders/{oid}")
    for text in ("Noise-Cancelling Headset", "USB-C Charging Dock", "319.99", "89.00",
                 "497.99", "************1111", "ServiceUnavailable", "retryable",
                 'id="next-retry"', f'href="/task/{quote(oid)}%3Apayment%3A1"',
                 "Retry inventory now"):  # fmt: skip
        assert text in detail, text
    assert not CLEAR.search(detail)
    _, failed_page = flower.request("GET", f"/orders/{failed}")
    assert "CreditCardExpired" in failed_page and "not retryable" in failed_page
    status, _ = flower.request("GET", "/orders/no-such-order")
    assert status == 404


def test_json_api_has_the_cli_shapes(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    listed = api(flower, "/api/orders?status=completed")
    cli = json.loads(d.cli("list", "--status", "completed", "--json").stdout)
    assert listed == cli
    shown = api(flower, f"/api/orders/{oid}")
    assert shown == json.loads(d.cli("show", oid, "--json").stdout)
    status, body = flower.request("GET", "/api/orders?limit=x")
    assert status == 400 and "limit must be a whole number" in body


def test_operations_are_atomic_and_say_who(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    # approve
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    assert act(flower, oid, "approve")["ok"]
    assert d.wait(oid).status is OrderStatus.COMPLETED
    assert d.client.get_order(oid).approval.by == "alice (flower)"
    refused = act(flower, oid, "approve")
    assert not refused["ok"] and "already completed" in str(refused["error"])

    # retry now: the 30 s backoff is skipped; the held retry message finds itself stale
    slow = f"{oid}-r"
    set_fault(d.redis, "inventory", attempts=1, order_id=slow)
    d.client.place_order(order_doc(order_id=slow))
    d.client.wait_for(slow, lambda v: v.retrying, 30, "retrying")
    assert act(flower, slow, "retry")["ok"]
    assert d.wait(slow, timeout=10).status is OrderStatus.COMPLETED
    retried = [e for e in d.client.history(slow) if e.type == "retried_now"]
    assert [e.data["by"] for e in retried] == ["alice (flower)"]

    # resume from a step after a cancel: the refunded payment is charged again
    again = f"{oid}-c"
    set_fault(d.redis, "inventory", attempts=None, order_id=again)
    d.client.place_order(order_doc(order_id=again))
    d.client.wait_for(again, lambda v: v.retrying, 30, "retrying")
    assert act(flower, again, "cancel", reason="customer called")["ok"]
    cancelled = d.wait(again)
    assert cancelled.status is OrderStatus.CANCELLED
    assert "Payment of 497.99 refunded" in cancelled.compensated
    refused = act(flower, again, "resume", step="nonsense")
    assert not refused["ok"]
    clear_faults(d.redis, "inventory", again)
    assert act(flower, again, "resume", step="delivery")["ok"]
    done = d.wait(again)
    assert done.status is OrderStatus.COMPLETED, d.explain(again)
    ledger = d.ledger(again)
    assert ledger["charge_effects"] == "2" and "refund" not in ledger and "refund:1" in ledger
    assert ledger["reserve_effects"] == "1" and ledger["ship_effects"] == "1"
    resumed = [e for e in d.client.history(again) if e.type == "order_resumed"]
    assert resumed[0].data == {"by": "alice (flower)", "requested": "delivery",
                               "step": "payment", "epoch": 2}  # fmt: skip


def test_bulk_cancel_on_a_filter(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    ids = d.awaiting_approval(f"{oid}-{i}" for i in range(3))
    form = [("action", "cancel"), ("id", ids[0]), ("id", ids[1]), ("id", "no-such-order")]
    status, _ = flower.request("POST", "/orders/bulk", form)
    assert status == 302
    assert [d.client.get_order(i).status for i in ids] == [
        OrderStatus.CANCELLED, OrderStatus.CANCELLED, OrderStatus.AWAITING_APPROVAL]  # fmt: skip
    status, _ = flower.request(
        "POST", "/orders/bulk", {"action": "approve", "all": "1", "status": "awaiting_approval"}
    )
    assert status == 302
    assert d.wait(ids[2]).status is OrderStatus.COMPLETED


def test_bulk_reject_and_bulk_resume(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    ids = d.awaiting_approval(f"{oid}-{i}" for i in range(2))
    form = [("action", "reject"), ("reason", "over budget"), ("id", ids[0]), ("id", ids[1])]
    status, _ = flower.request("POST", "/orders/bulk", form)
    assert status == 302
    for order_id in ids:
        view = d.wait(order_id)
        assert view.failure is not None and view.failure.type == "ApprovalRejected"
        assert view.failure.message == "over budget"
    form = [("action", "resume"), ("step", "payment"), ("id", ids[0]), ("id", ids[1])]
    status, _ = flower.request("POST", "/orders/bulk", form)
    assert status == 302
    for order_id in ids:  # the gate never passed: a resumed order waits at it again
        d.wait_status(order_id, OrderStatus.AWAITING_APPROVAL)
        assert d.client.get_order(order_id).epoch == 2


def test_the_list_filters_by_time_and_by_failure(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    d, flower = live
    before = datetime.now(UTC) - timedelta(seconds=1)
    expired = d.client.place_order(order_doc(order_id=f"{oid}-x", expiration="01/20"))
    ok = d.client.place_order(order_doc(order_id=f"{oid}-ok"))
    for handle in (expired, ok):
        d.wait(handle.id)
    status, body = flower.request("GET", "/api/orders?failure=CreditCardExpired&limit=1000")
    assert status == 200
    ids = {o["id"] for o in json.loads(body)}
    assert expired.id in ids and ok.id not in ids
    since = before.strftime("%Y-%m-%dT%H:%M:%S")
    status, body = flower.request("GET", f"/api/orders?since={since}&limit=1000")
    assert {expired.id, ok.id} <= {o["id"] for o in json.loads(body)}
    status, body = flower.request("GET", f"/api/orders?until={since}&limit=1000")
    assert not {expired.id, ok.id} & {o["id"] for o in json.loads(body)}
    status, _ = flower.request("GET", "/api/orders?since=yesterday")
    assert status == 400
    status, page = flower.request("GET", f"/orders?failure=CreditCardExpired&since={since}")
    assert status == 200 and expired.id in page and ok.id not in page


def test_order_metrics_beside_flowers(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    set_fault(d.redis, "inventory", attempts=1, order_id=oid)
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.retrying, 30, "retrying")
    d.client.retry_now(oid, by="test")
    d.wait(oid)
    waiting = f"{oid}-a"
    d.client.place_order(order_doc(EXPENSIVE, order_id=waiting))
    d.wait_status(waiting, OrderStatus.AWAITING_APPROVAL)
    d.client.approve_order(waiting, by="test")
    d.wait(waiting)
    metrics = flower.get("/metrics")
    expected = [
        'fulfillment_orders{status="completed"} 2.0',
        'fulfillment_orders{status="retrying"} 0.0',
        'fulfillment_step_attempts_total{outcome="retried",step="inventory"} 1.0',
        'fulfillment_step_attempts_total{outcome="succeeded",step="inventory"} 2.0',
        'fulfillment_step_retries_total{step="inventory"} 1.0',
        'fulfillment_step_retry_now_total{step="inventory"} 1.0',
        'fulfillment_orders_finished_total{status="completed"} 2.0',
        'fulfillment_step_duration_seconds_count{step="payment"} 2.0',
        "fulfillment_approval_wait_seconds_count 1.0",
        'fulfillment_approvals_total{outcome="decided"} 1.0',
        "flower_events_total",  # Flower's own are still there
    ]
    for line in expected:
        assert line in metrics, line
    # a compensation and a re-drive are counted too
    failed = f"{oid}-f"
    d.client.place_order(order_doc(("Unicorn", "10.00", 1), order_id=failed))
    d.wait(failed)
    metrics = flower.get("/metrics")
    assert 'fulfillment_compensations_total{action="refund_payment",outcome="done"} 1.0' in metrics
    assert 'fulfillment_step_attempts_total{outcome="failed",step="inventory"} 1.0' in metrics


def test_flower_task_view_tells_the_truth(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    tasks = settled_in_flower(flower, oid, STEP_TASKS)
    payment = next(t for t in tasks if t["name"] == "fulfillment.process_payment")
    # the shown kwargs summarise the order: item names and quantities, total, masked card
    for text in ("Noise-Cancelling Headset", "USB-C Charging Dock", "497.99", "************1111"):
        assert text in payment["kwargs"], payment["kwargs"]
    # a duplicate of a completed step's message (forged, or delivered twice) is SKIPPED
    d.client.app.send_task("fulfillment.process_payment", args=(oid,), kwargs={"epoch": 1},
                  task_id=f"{oid}-dup", queue=d.settings.queue, ignore_result=True)  # fmt: skip

    def skipped() -> dict[str, object] | None:
        dup = [t for t in flower.tasks(oid) if t["uuid"] == f"{oid}-dup"]
        return dup[0] if dup and dup[0]["state"] == "SKIPPED" else None

    wait_until(skipped, 30, "the duplicate to show as SKIPPED")
    assert d.ledger(oid)["charge_effects"] == "1"
    # a business error is one WARNING line, not an ERROR with a traceback
    expired = f"{oid}-e"
    d.client.place_order(order_doc(order_id=expired, expiration="01/20"))
    d.wait(expired)
    log = d.workers[0].log.read_text()
    lines = [line for line in log.splitlines() if expired in line and "CreditCardExpired" in line]
    assert lines and all("ERROR" not in line for line in lines), lines
    assert any("WARNING" in line for line in lines), lines
    assert "Traceback" not in log


def test_lost_attempt_does_not_stay_started(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    # a long time limit: the hanging attempt is lost with its worker, not timed out
    d = deploy(FULFILLMENT_STEP_TIME_LIMIT="30")
    flower = Flower(d, d.workdir / "flower.db").start()
    try:
        _lost_attempt_shows_lost(d, flower, oid)
    finally:
        flower.stop()


def _lost_attempt_shows_lost(d: Deployment, flower: Flower, oid: str) -> None:
    set_fault(d.redis, "payment", attempts=1, mode="hang", order_id=oid)
    first, second = d.start_worker(), d.start_worker()
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.phase == "running", 30, "payment to run")
    running_on = str(d.client.store.record(oid).get("worker"))
    holder, other = (first, second) if running_on.startswith(first.name.split("@")[0] + "@") \
        else (second, first)  # fmt: skip
    holder.destroy()  # SIGKILL, main process and pool children
    assert d.wait(oid, timeout=60).status is OrderStatus.COMPLETED, d.explain(oid)
    assert other.alive()

    def lost() -> bool:
        first = [t for t in flower.tasks(oid) if t["uuid"] == f"{oid}:payment:1"]
        return bool(first) and first[0]["state"] == "LOST"

    wait_until(lost, 30, "the lost attempt to show as LOST in Flower")


def test_cli_retry_and_resume(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, _ = live
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    out = d.cli("retry", oid)
    assert out.returncode == 1 and out.stderr.strip() == (
        f"error: cannot retry order {oid}: it is already completed"
    ), out.stderr
    out = d.cli("resume", oid, "--from", "payment")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert f"cannot resume payment of order {oid}: it is completed" in out.stderr
    out = d.cli("resume", oid, "--from", "shipping")
    assert out.returncode == 1 and "has no step 'shipping'" in out.stderr, out.stderr
    out = d.cli("resume", oid)
    assert out.returncode == 2 and out.stderr.count("\n") <= 3, out.stderr


def test_without_flower_auth_the_view_is_read_only(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()
    flower = Flower(d, d.workdir / "flower.db").start()  # no --basic-auth
    try:
        d.start_worker()
        d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
        d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
        status, page = flower.request("GET", f"/orders/{oid}")
        assert status == 200 and 'id="operations-need-auth"' in page
        assert 'id="action-approve"' not in page
        status, body = flower.request("POST", f"/orders/{oid}/approve")
        assert status == 403 and "operations on orders need Flower" in body, (status, body[:300])
        status, body = flower.request("GET", "/api/orders")  # reads what the page shows
        assert status == 200 and oid in body
        status, body = flower.request("POST", f"/api/orders/{oid}/approve")
        assert status == 403 and "operations on orders need Flower" in body, (status, body)
        assert d.client.get_order(oid).approval.decision is None
    finally:
        flower.stop()

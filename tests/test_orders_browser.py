"""The Orders view in a real headless Chromium: list -> filter -> open an order ->
approve -> watch it complete; retry now; resume from a step; bulk cancel; and a
refusal without credentials. Screenshots land in ``test-artifacts/``."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fulfillment.orders.services import set_fault
from fulfillment.orders.services.faults import clear_faults
from fulfillment.orders.state import OrderStatus

from .browser import chromium
from .flower import AUTH, Flower, orders_stack
from .support import ARTIFACTS, EXPENSIVE, Deployment, order_doc

pytestmark = pytest.mark.browser


@pytest.fixture
def live(deploy) -> Iterator[tuple[Deployment, Flower]]:  # type: ignore[no-untyped-def]
    with orders_stack(deploy) as stack:
        yield stack


class Page:
    """The browser on the Orders view, with waits bounded by conditions."""

    def __init__(self, browser: Any, base: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser = browser
        self.base = base
        self.wait = WebDriverWait(browser, 30, poll_frequency=0.2)

    def open(self, path: str) -> None:
        self.browser.get(self.base + path)
        self.css("main")

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))

    def click(self, selector: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, selector))).click()

    def submit(self, selector: str) -> None:
        """Click a link or a form's button and wait until the page it leads to has loaded
        (so what is read next is the new page, never the one before it)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        before = self.browser.find_element(By.TAG_NAME, "html")
        self.click(selector)
        self.wait.until(ec.staleness_of(before), f"the page after {selector}")
        self.css("main")

    def until(self, condition: Callable[[], bool], what: str) -> None:
        """Reload until ``condition`` holds on the page (bounded)."""

        def holds(_: Any) -> bool:
            self.browser.refresh()
            return condition()

        self.wait.until(holds, f"page to show {what}")

    def text(self, selector: str = "body") -> str:
        return str(self.css(selector).text)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.browser.save_screenshot(str(ARTIFACTS / name))


@pytest.fixture
def page(live) -> Iterator[Page]:  # type: ignore[no-untyped-def]
    _, flower = live
    browser = chromium("Basic " + base64.b64encode(AUTH.encode()).decode())
    try:
        p = Page(browser, flower.url)
        p.open("/orders")
        # the tests reload when they want to see a change: no refresh under their clicks
        browser.execute_script("localStorage.setItem('fulfillment.orders.autorefresh', 'off')")
        yield p
    finally:
        browser.quit()


def test_list_filter_open_approve_and_watch_it_complete(live, page: Page, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, _ = live
    done = f"{oid}-done"
    d.client.place_order(order_doc(order_id=done)).result(timeout=30)
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)

    page.open("/orders")
    assert "Orders" in page.text("nav.app-navbar")
    assert oid in page.text("#orders-table") and done in page.text("#orders-table")
    page.shot("orders-list.png")
    page.submit('#orders-counts a[data-status="awaiting_approval"]')
    page.wait.until(lambda _: done not in page.text("#orders-table"), "the filter")
    assert oid in page.text("#orders-table")
    page.shot("orders-filtered-awaiting-approval.png")

    page.submit(f'#orders-table a[href="/orders/{oid}"]')
    page.css("#action-approve")
    assert "Electric Cargo Bike" in page.text("#order-items")
    assert "awaiting approval" in page.text("#order-status")
    page.shot("order-awaiting-approval.png")
    page.submit("#action-approve")
    assert "approved by alice (flower)" in page.text("#order-message")
    page.until(lambda: page.text("#order-status") == "completed", "the order completed")
    assert "Order fulfilled" in page.text("#order-result")
    assert "alice (flower)" in page.text("#order-approval")
    page.shot("order-approved-completed.png")


def test_retry_now_from_the_order_page(live, page: Page, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, _ = live
    set_fault(d.redis, "inventory", attempts=1, order_id=oid)
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.retrying, 30, "retrying")
    page.open(f"/orders/{oid}")
    assert "retrying" in page.text("#order-status")
    assert "ServiceUnavailable" in page.text("#order-timeline")
    page.css("#next-retry")
    page.shot("order-retrying.png")
    page.submit("#action-retry")
    assert "inventory runs again now" in page.text("#order-message")
    page.until(lambda: page.text("#order-status") == "completed", "the order completed")
    assert d.client.get_order(oid).steps[1].attempts == 2
    page.shot("order-retried-now-completed.png")


def test_resume_a_cancelled_order_from_a_step(live, page: Page, oid: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import Select

    d, _ = live
    set_fault(d.redis, "inventory", attempts=None, order_id=oid)
    d.client.place_order(order_doc(order_id=oid))
    d.client.wait_for(oid, lambda v: v.retrying, 30, "retrying")
    page.open(f"/orders/{oid}")
    page.css("#cancel-reason").send_keys("customer called")
    page.submit("#action-cancel")
    assert "cancelled" in page.text("#order-message")
    page.until(lambda: "refunded" in page.text("#order-compensations"), "the refund")
    page.shot("order-cancelled-refunded.png")
    clear_faults(d.redis, "inventory", oid)
    Select(page.css("#resume-step")).select_by_value("inventory")
    page.submit("#action-resume")
    assert "resumed from payment" in page.text("#order-message")  # the refund is undone first
    page.until(lambda: page.text("#order-status") == "completed", "the order completed")
    assert d.ledger(oid)["charge_effects"] == "2"
    page.shot("order-resumed-completed.png")


def test_bulk_cancel_selected_orders(live, page: Page, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, _ = live
    ids = d.awaiting_approval(f"{oid}-{i}" for i in range(3))
    page.open("/orders?status=awaiting_approval")
    for order_id in ids[:2]:
        page.click(f'input[name=id][value="{order_id}"]')
    page.shot("orders-bulk-selected.png")
    page.submit("#bulk-cancel")
    assert "2 cancelled, 0 refused" in page.text("#orders-message")
    statuses = [d.wait(i).status if i != ids[2] else d.client.get_order(i).status for i in ids]
    assert statuses == [OrderStatus.CANCELLED, OrderStatus.CANCELLED, OrderStatus.AWAITING_APPROVAL]
    page.shot("orders-bulk-cancelled.png")


def test_refused_without_credentials(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    browser = chromium()
    try:
        browser.get(f"{flower.url}/orders/{oid}")
        source = browser.page_source
        assert oid not in source and "action-approve" not in source
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "orders-refused-without-credentials.png"))
    finally:
        browser.quit()
    assert d.client.get_order(oid).status is OrderStatus.AWAITING_APPROVAL


def test_the_order_page_tells_its_story(live, page: Page, oid: str) -> None:  # type: ignore[no-untyped-def]
    """A chart of every attempt, retry wait, the approval wait and each undo on one time
    axis; readable times and durations; the raw history one click away; policies; steps
    that never ran; Flower's task page linking back."""
    d, _ = live
    set_fault(d.redis, "inventory", attempts=1, order_id=oid)  # a failure, then a success
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    d.client.approve_order(oid, by="alice")
    d.client.wait_for(oid, lambda v: v.retrying, 30, "retrying")  # this stack waits 30 s
    d.client.retry_now(oid, by="alice")
    d.wait(oid, timeout=60)
    page.open(f"/orders/{oid}")
    chart = page.css("#order-chart svg")
    kinds = [bar.get_attribute("data-kind") for bar in chart.find_elements("css selector", "rect")]
    assert {"decided", "succeeded", "failed", "retry-wait"} <= set(kinds), kinds
    lanes = [g.get_attribute("data-lane") for g in chart.find_elements("css selector", "g")]
    assert lanes == ["approval", "payment", "inventory", "delivery"], lanes
    title = chart.find_element("css selector", "rect[data-kind=failed] title")
    assert "inventory attempt 1: failed: ServiceUnavailable" in title.get_attribute("textContent")
    assert " on " in title.get_attribute("textContent")  # the worker, on hover
    timeline = page.text("#order-timeline")
    assert "UTC" in page.text("main")
    assert " s per attempt; retries after " in timeline
    assert " ms" in timeline or " s" in timeline
    assert page.css("#order-events").get_attribute("open") is None  # the history: a click away
    page.shot("order-story.png")

    cancelled = f"{oid}-c"
    d.client.place_order(order_doc(EXPENSIVE, order_id=cancelled))
    d.wait_status(cancelled, OrderStatus.AWAITING_APPROVAL)
    d.client.cancel_order(cancelled)
    d.wait(cancelled)
    page.open(f"/orders/{cancelled}")
    states = page.text("#order-timeline")
    assert "not run" in states and "pending" not in states
    page.shot("order-never-ran.png")

    task_id = d.client.timeline(oid).steps[1].attempts[-1].task_id
    page.open(f"/task/{task_id}")
    link = page.css("#task-order a")
    assert link.text == oid
    page.submit("#task-order a")
    page.css("#order-chart")

"""Flower as the UI: task search by order id, masked arguments, results, metrics, persistence.

The browser test drives a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which ``.ci/run`` installs) through Selenium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from .browser import chromium
from .flower import STEP_TASKS, Flower, settled_in_flower
from .support import ARTIFACTS, Deployment, order_doc

CARD = "4111 1111 1111 1111"
CLEAR = re.compile(r"4111[ -]?1111[ -]?1111[ -]?1111")


@pytest.fixture
def live(deploy) -> Iterator[tuple[Deployment, Flower]]:  # type: ignore[no-untyped-def]
    d = deploy()
    flower = Flower(d, d.workdir / "flower.db").start()  # before the worker: sees every event
    d.start_worker()
    try:
        yield d, flower
    finally:
        flower.stop()


def test_flower_lists_an_orders_tasks_masked_with_results(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    result = d.client.place_order(order_doc(order_id=oid, card=CARD)).result(timeout=30)
    tasks = settled_in_flower(flower, oid, STEP_TASKS)
    by_name = {t["name"]: t for t in tasks}
    assert set(by_name) == STEP_TASKS
    for task in tasks:
        assert oid in task["args"]
        assert "************1111" in task["kwargs"]
        assert not CLEAR.search(str(task)), task
        assert task["runtime"] is not None and task["worker"]
    assert by_name["fulfillment.process_payment"]["result"] == "'Payment processed for 2 items'"
    assert by_name["fulfillment.deliver_order"]["result"].strip("'") in result
    # the CLI's timeline names the same Celery task ids
    ids = {a.task_id for s in d.client.timeline(oid).steps for a in s.attempts}
    assert ids == {t["uuid"] for t in tasks}


def test_flower_shows_retries_of_a_step(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    from fulfillment.orders.services import set_fault

    d, flower = live
    set_fault(d.redis, "inventory", attempts=2, mode="raise", order_id=oid)
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    tasks = settled_in_flower(flower, oid, STEP_TASKS)
    inventory = [t for t in tasks if t["name"] == "fulfillment.reserve_inventory"]
    # Celery's own retries: one task id, retried twice, then succeeded
    assert len(inventory) == 1 and inventory[0]["retries"] == 2, inventory


def test_metrics_endpoint_counts_fulfillment_tasks(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    settled_in_flower(flower, oid, STEP_TASKS)
    metrics = flower.get("/metrics")
    for task in STEP_TASKS:
        pattern = rf'flower_events_total\{{task="{re.escape(task)}",type="task-succeeded"'
        assert re.search(pattern, metrics), task
    assert "flower_task_runtime_seconds" in metrics


def test_flower_keeps_its_state_across_restarts(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    d, flower = live
    d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    settled_in_flower(flower, oid, STEP_TASKS)
    flower.stop()
    flower.start()
    assert {t["name"] for t in flower.tasks(oid)} == STEP_TASKS


@pytest.mark.browser
def test_browser_search_order_and_open_a_task(live, oid: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d, flower = live
    d.client.place_order(order_doc(order_id=oid, card=CARD)).result(timeout=30)
    tasks = settled_in_flower(flower, oid, STEP_TASKS)
    payment = next(t["uuid"] for t in tasks if t["name"] == "fulfillment.process_payment")
    ARTIFACTS.mkdir(exist_ok=True)
    browser = chromium()
    try:
        wait = WebDriverWait(browser, 20)
        browser.get(f"{flower.url}/tasks")
        search = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "input[type=search]")))
        search.send_keys(oid)

        def listed(drv) -> bool:  # type: ignore[no-untyped-def]
            text = drv.find_element(By.CSS_SELECTOR, "table#tasks-table tbody").text
            return all(name in text for name in STEP_TASKS)

        wait.until(listed)
        body = browser.find_element(By.CSS_SELECTOR, "table#tasks-table tbody").text
        assert oid in body and not CLEAR.search(body)
        browser.save_screenshot(str(ARTIFACTS / "flower-order-search.png"))

        browser.find_element(By.LINK_TEXT, payment).click()  # the task id, as `show` prints it
        # Flower links to /task/<encodeURIComponent(task id)>
        wait.until(lambda drv: f"/task/{payment}" in unquote(drv.current_url))
        wait.until(lambda drv: "Payment processed" in drv.page_source)
        page = browser.find_element(By.TAG_NAME, "body").text
        assert oid in page and "************1111" in page
        assert "Payment processed for 2 items" in page
        assert not CLEAR.search(browser.page_source)
        browser.save_screenshot(str(ARTIFACTS / "flower-payment-task.png"))
    finally:
        browser.quit()


def test_task_sent_events_can_be_turned_on(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_TASK_SENT_EVENTS="1")
    flower = Flower(d, d.workdir / "flower.db").start()
    try:
        d.start_worker()
        d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
        tasks = settled_in_flower(flower, oid, STEP_TASKS)
        assert all(t["sent"] for t in tasks), [t["sent"] for t in tasks]
    finally:
        flower.stop()

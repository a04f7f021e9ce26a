"""OpenTelemetry: one trace per order, from place_order to its end, collected from real
workers. The producer's spans go to the SDK's in-memory exporter; the workers' (every
pool process) to a JSON-lines file (``tests/otel_app.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fulfillment.orders.services import set_fault
from fulfillment.orders.state import OrderStatus

from .rabbit import broker_env
from .support import EXPENSIVE, Deployment, order_doc, wait_until

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from .spans import span_record

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def producer_tracing() -> None:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # another module set it: add our exporter
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


def spans_of(d: Deployment, files: Path, order_id: str) -> list[dict[str, Any]]:
    mine = [span_record(s) for s in EXPORTER.get_finished_spans()]
    theirs = [json.loads(line) for line in files.read_text().splitlines()] if files.exists() else []
    return [s for s in mine + theirs if s["attributes"].get("run.id") == order_id]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_one_trace_per_order_with_a_span_per_attempt(
    deploy, tmp_path: Path, oid: str, broker: str
) -> None:  # type: ignore[no-untyped-def]
    with broker_env(broker) as env:  # on RabbitMQ the context rides in AMQP headers
        one_trace_per_order(deploy(OTEL_TEST_SPANS=str(tmp_path / "spans.jsonl"), **env), oid)


def one_trace_per_order(d: Deployment, oid: str) -> None:
    files = Path(d.env["OTEL_TEST_SPANS"])
    d.start_worker(concurrency=2, app="tests.otel_app")
    set_fault(d.redis, "inventory", attempts=2, order_id=oid)
    d.client.place_order(order_doc(EXPENSIVE, order_id=oid))
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL)
    d.client.approve_order(oid, by="alice")
    assert d.wait(oid).status is OrderStatus.COMPLETED

    def collected() -> list[dict[str, Any]] | None:
        spans = spans_of(d, files, oid)
        steps = [s for s in spans if s["name"].startswith("order.step ")]
        return spans if len(steps) == 5 else None  # payment, inventory x3, delivery

    spans = wait_until(collected, 30, "the order's spans")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    (root,) = by_name["order.start"]
    assert root["parent_id"] is None
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}, "one trace per order"
    inventory = sorted(by_name["order.step inventory"], key=lambda s: s["attributes"]["attempt"])
    assert [s["attributes"]["outcome"] for s in inventory] == ["retried", "retried", "succeeded"]
    assert [s["attributes"]["attempt"] for s in inventory] == [1, 2, 3]
    for s in by_name["order.step payment"] + by_name["order.step delivery"] + inventory:
        assert s["attributes"]["worker"] and s["attributes"]["step"] in s["name"]
    # the wait for approval is a span of its own, from the wait's start to the decision
    (wait,) = by_name["order.gate approval"]
    assert wait["attributes"]["outcome"] == "approved"
    assert wait["start"] < by_name["order.step payment"][0]["start"]
    # every span descends from the root, through the messages' trace context
    ids = {s["span_id"]: s for s in spans}
    for s in spans:
        node = s
        while node["parent_id"] is not None and node["parent_id"] in ids:
            node = ids[node["parent_id"]]
        assert node is root or node["parent_id"] == root["span_id"], s["name"]


def test_compensations_and_redrives_stay_in_the_trace(deploy, tmp_path: Path, oid: str) -> None:  # type: ignore[no-untyped-def]
    files = tmp_path / "spans.jsonl"
    d = deploy(OTEL_TEST_SPANS=str(files), FULFILLMENT_STEP_TIME_LIMIT="30")
    first = d.start_worker(app="tests.otel_app")
    second = d.start_worker(app="tests.otel_app")
    # the inventory attempt hangs on one worker, which is killed: the watchdog re-drives it
    set_fault(d.redis, "inventory", attempts=1, mode="hang", order_id=oid)
    d.client.place_order(order_doc(("Unicorn", "10.00", 1), order_id=oid))
    d.client.wait_for(oid, lambda v: v.current_step == "inventory" and v.phase == "running",
                      30, "inventory to run")  # fmt: skip
    holder = str(d.client.store.record(oid).get("worker"))
    victim = first if holder.startswith(first.name.split("@")[0] + "@") else second
    victim.destroy()
    view = d.wait(oid, timeout=60)
    assert view.status is OrderStatus.FAILED and view.failure.type == "UnknownItem"  # type: ignore[union-attr]

    def collected() -> list[dict[str, Any]] | None:
        spans = spans_of(d, files, oid)
        return spans if any(s["name"] == "order.undo refund_payment" for s in spans) else None

    spans = wait_until(collected, 30, "the refund's span")
    (root,) = [s for s in spans if s["name"] == "order.start"]
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    inventory = [s for s in spans if s["name"] == "order.step inventory"]
    # the killed attempt never reported; the re-driven one did, in the same trace
    assert [s["attributes"]["outcome"] for s in inventory] == ["failed"], inventory
    assert inventory[0]["attributes"]["epoch"] == 2
    (refund,) = [s for s in spans if s["name"] == "order.undo refund_payment"]
    assert refund["attributes"]["outcome"] == "done"

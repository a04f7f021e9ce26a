"""The ``fulfillment`` console script, invoked as a real process against live workers."""

from __future__ import annotations

import json

import pytest

from fulfillment.orders.errors import OrderFailed
from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, Deployment, order_doc


def test_submit_wait_prints_the_result(shared: Deployment, oid: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "order.json"
    path.write_text(json.dumps(order_doc(order_id=oid)))
    out = shared.cli("submit", str(path), "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{oid}: Order fulfilled: Payment processed for 2 items")


def test_submit_from_stdin_then_status_and_show(shared: Deployment, oid: str) -> None:
    out = shared.cli("submit", input=json.dumps(order_doc(order_id=oid)))
    assert (out.returncode, out.stdout.strip()) == (0, oid), out.stderr
    shared.wait(oid)
    status = shared.cli("status", oid)
    assert status.returncode == 0 and "completed" in status.stdout
    show = shared.cli("show", oid)
    assert show.returncode == 0, show.stderr
    for needle in ("payment", "inventory", "delivery", "Order fulfilled", "************1111"):
        assert needle in show.stdout
    tl = json.loads(shared.cli("show", oid, "--json").stdout)
    assert tl["order"]["status"] == "completed"
    assert [s["name"] for s in tl["steps"]] == ["payment", "inventory", "delivery"]
    assert all(s["attempts"][0]["task_id"] for s in tl["steps"])
    assert "4111111111111111" not in show.stdout + json.dumps(tl)


def test_submit_failed_order_with_wait_exits_non_zero(shared: Deployment, oid: str) -> None:
    doc = order_doc(order_id=oid, expiration="01/21")
    out = shared.cli("submit", "--wait", input=json.dumps(doc))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: order {oid} failed: CreditCardExpired: Payment failed: Credit card expired"
    ]


def test_approve_and_reject_commands(shared: Deployment, oid: str) -> None:
    for suffix in ("a", "r"):
        assert shared.cli("submit", input=json.dumps(order_doc(EXPENSIVE, order_id=oid + suffix)))
    shared.wait_status(oid + "a", OrderStatus.AWAITING_APPROVAL)
    shared.wait_status(oid + "r", OrderStatus.AWAITING_APPROVAL)
    waiting = json.loads(shared.cli("list", "--status", "awaiting_approval", "--json").stdout)
    assert {oid + "a", oid + "r"} <= {o["id"] for o in waiting}
    out = shared.cli("approve", oid + "a", "--by", "carol")
    assert out.returncode == 0 and "approved by carol" in out.stdout, out.stderr
    out = shared.cli("reject", oid + "r", "--reason", "not in budget")
    assert out.returncode == 0, out.stderr
    assert shared.wait(oid + "a").status is OrderStatus.COMPLETED
    rejected = shared.wait(oid + "r")
    assert rejected.failure is not None and rejected.failure.message == "not in budget"
    again = shared.cli("approve", oid + "a")
    assert again.returncode == 1
    assert again.stderr.startswith(f"error: cannot approve order {oid}a: it is already completed")


def test_errors_are_one_line_and_non_zero(shared: Deployment) -> None:
    cases = [
        (("approve", "missing-order"), "missing-order"),
        (("reject", "missing-order"), "missing-order"),
        (("cancel", "missing-order"), "missing-order"),
        (("show", "missing-order"), "missing-order"),
        (("status", "missing-order"), "missing-order"),
        (("submit", "/no/such/file.json"), "no such file"),
    ]
    for args, needle in cases:
        out = shared.cli(*args)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    bad = shared.cli("submit", input='{"items": [], "payment": {}}')
    assert bad.returncode == 1 and "items" in bad.stderr and len(bad.stderr.splitlines()) == 1
    usage = shared.cli("list", "--status", "lost")
    assert usage.returncode == 2


def test_list_retrying_and_faults_commands(shared: Deployment, oid: str) -> None:
    out = shared.cli("faults", "inject", "inventory", "--forever", "--order", oid)
    assert out.returncode == 0 and "until cleared" in out.stdout
    assert f"inventory:{oid}" in shared.cli("faults", "list").stdout
    shared.cli("submit", input=json.dumps(order_doc(order_id=oid)))
    shared.client.wait_for(oid, lambda v: v.steps[1].attempts >= 2, 30)
    shared.client.wait_for(oid, lambda v: v.retrying, 30)
    retrying = json.loads(shared.cli("list", "--status", "retrying", "--json").stdout)
    assert oid in [o["id"] for o in retrying]
    assert shared.cli("faults", "clear", "inventory", "--order", oid).returncode == 0
    assert shared.wait(oid).status is OrderStatus.COMPLETED
    retrying = json.loads(shared.cli("list", "--status", "retrying", "--json").stdout)
    assert oid not in [o["id"] for o in retrying]


def test_generate_places_a_mixed_batch(shared: Deployment) -> None:
    out = shared.cli(
        "generate", "-n", "10", "-i", "20", "--expensive-percentage", "20",
        "--expired-card-percentage", "20", "--seed", "7", "--wait", "--timeout", "60",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("placed 10 orders:")
    final = out.stdout.strip().splitlines()[-1]
    assert final.startswith("final: ") and "unfinished" not in final, final
    assert "awaiting_approval" in final and "failed" in final and "completed" in final


def test_cancel_command(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d = deploy()  # no workers: the order stays pending
    d.cli("submit", input=json.dumps(order_doc(order_id=oid)))
    out = d.cli("cancel", oid)
    assert out.returncode == 0, out.stderr
    assert d.client.get_order(oid).status is OrderStatus.CANCELLED


# The documented --json shapes (README, "JSON output"): changing them is a breaking change
# (adding a key is not: ends_as and the compensations' details came with compensating).
ORDER_KEYS = {
    "id", "status", "total", "items", "lines", "card", "created_at", "updated_at", "finished_at",
    "current_step", "phase", "epoch", "next_retry_at", "retrying", "result", "failure",
    "ends_as", "approval", "steps", "compensations",
}  # fmt: skip
COMPENSATION_KEYS = {"action", "step", "state", "summary", "failures", "last_error"}
UNDO_KEYS = {"action", "step", "position", "state", "summary", "claims"}
CLAIM_KEYS = {
    "number", "started_at", "worker", "task_id", "outcome", "duration_ms", "summary", "error",
    "retry_in_ms",
}  # fmt: skip
ATTEMPT_KEYS = {
    "number", "started_at", "worker", "task_id", "outcome", "duration_ms", "result",
    "error_type", "error", "retryable", "retry_in_ms", "next_retry_at", "note",
}  # fmt: skip


def test_json_shapes_are_stable(shared: Deployment, oid: str) -> None:
    from fulfillment.orders.services import set_fault

    set_fault(shared.redis, "inventory", attempts=1, order_id=oid)
    shared.client.place_order(order_doc(order_id=oid)).result(timeout=30)
    shown = json.loads(shared.cli("show", oid, "--json").stdout)
    assert set(shown) == {"order", "steps", "compensations", "events"}
    assert set(shown["order"]) == ORDER_KEYS
    assert shown["order"]["lines"] == [
        {"item_name": "Noise-Cancelling Headset", "quantity": 1, "item_price": "319.99"},
        {"item_name": "USB-C Charging Dock", "quantity": 2, "item_price": "89.00"},
    ]
    assert set(shown["order"]["approval"]) == {
        "required", "state", "deadline", "decision", "by", "reason", "decided_at"
    }  # fmt: skip
    assert {s["name"] for s in shown["steps"]} == {"payment", "inventory", "delivery"}
    for step in shown["steps"]:
        assert set(step) == {"name", "state", "attempts", "result", "next_retry_at"}
        for attempt in step["attempts"]:
            assert set(attempt) == ATTEMPT_KEYS
    inventory = next(s for s in shown["steps"] if s["name"] == "inventory")
    assert [a["outcome"] for a in inventory["attempts"]] == ["failed", "succeeded"]
    assert all(set(e) == {"id", "at", "type", "data"} for e in shown["events"])
    listed = json.loads(shared.cli("list", "--json", "--limit", "5").stdout)
    assert all(set(o) == ORDER_KEYS for o in listed)
    assert shown["compensations"] == [] and shown["order"]["ends_as"] is None

    failed = f"{oid}-f"  # an unknown item fails inventory after payment: one undo
    handle = shared.client.place_order(order_doc(("Moon Rock", "1.00", 1), order_id=failed))
    with pytest.raises(OrderFailed):
        handle.result(timeout=30)
    shown = json.loads(shared.cli("show", failed, "--json").stdout)
    assert [set(c) for c in shown["order"]["compensations"]] == [COMPENSATION_KEYS]
    assert [set(u) for u in shown["compensations"]] == [UNDO_KEYS]
    undo = shown["compensations"][0]
    assert (undo["action"], undo["step"], undo["position"]) == ("refund_payment", "payment", 1)
    assert [set(c) for c in undo["claims"]] == [CLAIM_KEYS]
    assert undo["claims"][0]["outcome"] == "done"

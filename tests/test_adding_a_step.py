"""README, "Adding a step": the order workflow with a fraud check between payment and inventory.

The variant (``tests/fraud_variant``) touches only the definition, one new activity
and its service; here it runs on real workers: retries while the screening is down,
a non-retryable ``FraudSuspected`` that fails the order and refunds its payment.
"""

from __future__ import annotations

import json

import pytest

from fulfillment.engine import create_app, register
from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.errors import OrderFailed
from fulfillment.orders.keys import FAULTS

from .fraud_variant import fraud_workflow
from .support import Deployment, order_doc

pytestmark = pytest.mark.slow


def variant_client(d: Deployment) -> FulfillmentClient:
    app = create_app("fraud-client", d.settings, set_as_current=False)
    register(app, fraud_workflow(d.settings))
    return FulfillmentClient(d.settings, app=app)


def test_fraud_check_between_payment_and_inventory(deploy, oid: str) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(app="tests.fraud_variant")
    client = variant_client(d)

    # the screening is down for two attempts: retried with the step's backoff
    d.redis.hset(FAULTS, f"fraud:{oid}", json.dumps({"attempts": 2}))
    handle = client.place_order(order_doc(order_id=oid))
    result = handle.result(timeout=60)
    assert (
        result.startswith(
            "Order fulfilled: Payment processed for 2 items, Fraud check passed (score "
        )
        and "Inventory reserved for 2 items, Order delivered" in result
    )
    steps = {s.name: s for s in client.timeline(oid).steps}
    assert list(steps) == ["payment", "fraud_check", "inventory", "delivery"]
    assert [a.outcome for a in steps["fraud_check"].attempts] == ["failed", "failed", "succeeded"]
    assert [a.retry_in_ms for a in steps["fraud_check"].attempts[:2]] == [100, 200]
    assert len(steps["payment"].attempts) == 1, "payment is not charged again"

    # a suspicious card: FraudSuspected is not retried; the payment is refunded
    suspect = client.place_order(order_doc(order_id=oid + "-x", card="4000 0000 0000 0000"))
    with pytest.raises(OrderFailed) as info:
        suspect.result(timeout=60)
    assert info.value.type == "FraudSuspected"
    assert info.value.compensations == ["Payment of 497.99 refunded"]
    fraud = client.timeline(suspect.id).steps[1]
    assert [(a.outcome, a.retryable) for a in fraud.attempts] == [("failed", False)]
    ledger = d.ledger(suspect.id)
    assert "charge" in ledger and "refund" in ledger and "reservation" not in ledger

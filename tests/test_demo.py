"""``fulfillment demo``: the crash-free scenarios of the contract, on workers it starts."""

from __future__ import annotations

from fulfillment.orders.keys import FAULTS
from fulfillment.orders.state import OrderStatus

from .support import processes_using


def test_demo_runs_every_scenario_as_expected(deploy) -> None:  # type: ignore[no-untyped-def]
    d = deploy(FULFILLMENT_SERVICE_LATENCY="0.02")
    out = d.cli("demo", "--workers", "2", timeout=180)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "8/8 scenarios ended as expected" in out.stdout
    for scenario in ("happy path", "expired card", "inventory down", "approved", "rejected"):
        assert scenario in out.stdout
    finished = d.client.list_orders(limit=100)
    assert len(finished) == 8 and all(v.status.finished for v in finished)
    assert sum(v.status is OrderStatus.COMPLETED for v in finished) == 4
    assert processes_using(d.url) == [], "the demo stops the workers it started"
    assert d.redis.hgetall(FAULTS) == {}, "the demo leaves no fault injection behind"

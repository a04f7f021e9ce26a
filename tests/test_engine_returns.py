"""A second workflow, unrelated to orders, defined entirely here and run by the engine.

Returns of goods: inspect the item, wait for a human to confirm the inspection (a
gate), refund the customer (undone by clawing the refund back), restock the item
(undone by taking it out of stock again). Its effects go through a fenced Lua
script of its own. Its workers run ``celery -A tests.test_engine_returns worker``:
the module's ``app`` is built on first use (module ``__getattr__``), from the
environment the deployment gives the worker.

Checked on real worker processes: a retry with backoff, a worker SIGKILLed mid-step
with failover, a cancel with compensation, a signal that arrives before the gate is
reached, and a gate that times out.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from celery import Celery
from pydantic import BaseModel

from fulfillment.engine import (
    ActivityContext,
    EngineSettings,
    Gate,
    RetryPolicy,
    RunCancelled,
    RunFailed,
    RunStatus,
    StaleAttempt,
    Step,
    Undo,
    UndoContext,
    Workflow,
    WorkflowClient,
    create_app,
    register,
)
from fulfillment.engine.connection import client_for
from fulfillment.engine.scripts import fenced_script
from fulfillment.engine.settings import load

from .support import Deployment, wait_until

pytestmark = pytest.mark.slow


class Return(BaseModel):
    """A customer sends an item back."""

    id: str
    item: str
    amount: Decimal
    busy_attempts: int = 0  # the inspector is busy for the first N attempts
    slow: dict[str, float] = {}  # seconds a step's effect takes


class InspectorBusy(Exception):
    """Retryable: try the inspection again later."""


EFFECT = """
-- KEYS: 1 the return's effects (hash), 2 its run record.
-- A: token, name (the effect), value, undo (true: undo the effect).
local A = cjson.decode(ARGV[1])
local why
if A.token.action then
  why = stale_claim(KEYS[2], A.token)
else
  why = stale_attempt(KEYS[2], A.token)
end
if why then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[1], 'refused', 1) end
  return reply({v = 'stale', reason = why})
end
redis.call('HINCRBY', KEYS[1], A.name .. ':calls', 1)
if A.undo then
  if redis.call('HEXISTS', KEYS[1], A.name) == 0 then return reply({v = 'nothing'}) end
  redis.call('HSETNX', KEYS[1], A.name .. ':undone', '1')
  return reply({v = 'undone'})
end
if redis.call('HSETNX', KEYS[1], A.name, A.value) == 1 then
  redis.call('HINCRBY', KEYS[1], A.name .. ':effects', 1)
end
return reply({v = 'ok', value = redis.call('HGET', KEYS[1], A.name)})
"""


@cache
def _settings() -> EngineSettings:
    return load(EngineSettings)


def effect(
    ctx: ActivityContext | UndoContext, name: str, value: str = "", undo: bool = False
) -> str:
    """One fenced effect of the return (refund, restock, or their undo)."""
    runtime = make_app().fulfillment_engine.workflows["returns"]  # type: ignore[attr-defined]
    keys = [runtime.store.companion(ctx.run_id, "effects"), runtime.space.run(ctx.run_id).record]
    script = fenced_script(client_for(_settings()), EFFECT)
    args = {"token": ctx.token.as_json(), "name": name, "value": value, "undo": undo}
    out = json.loads(script(keys=keys, args=[json.dumps(args)]))
    if out["v"] == "stale":
        raise StaleAttempt(out["reason"])
    return str(out["v"])


def inspect(ctx: ActivityContext) -> str:
    """Look at the returned item."""
    ret: Return = ctx.input
    if ctx.attempt <= ret.busy_attempts:
        raise InspectorBusy(f"inspector busy (attempt {ctx.attempt})")
    time.sleep(ret.slow.get("inspect", 0))
    return f"{ret.item} inspected"


def refund(ctx: ActivityContext) -> str:
    """Pay the customer back."""
    ret: Return = ctx.input
    time.sleep(ret.slow.get("refund", 0))
    effect(ctx, "refund", str(ret.amount))
    return f"refunded {ret.amount}"


def claw_back(ctx: UndoContext) -> tuple[bool, str]:
    """Take the refund back."""
    undone = effect(ctx, "refund", undo=True) == "undone"
    return undone, "refund clawed back" if undone else "no refund to claw back"


def restock(ctx: ActivityContext) -> str:
    """Put the item back on the shelf."""
    ret: Return = ctx.input
    time.sleep(ret.slow.get("restock", 0))
    effect(ctx, "restock", ret.item)
    return f"{ret.item} restocked"


def unstock(ctx: UndoContext) -> tuple[bool, str]:
    """Take the item off the shelf again."""
    undone = effect(ctx, "restock", undo=True) == "undone"
    return undone, "item unstocked" if undone else "nothing to unstock"


def returned(results: Mapping[str, str]) -> str:
    return f"Returned: {results['refund']}, {results['restock']}"


RETURNS = Workflow(
    name="returns",
    input=Return,
    summary=lambda r: {"item": r.item},
    result=returned,
    companions=("effects",),
    steps=[
        Step("inspect", inspect, retry=RetryPolicy(initial_interval=0.2, backoff_coefficient=2,
                                                   maximum_attempts=6), time_limit=3),
        Gate("inspection_passed", timeout=30, reject_error="InspectionFailed",
             timeout_error="InspectionTimeout", timeout_message="Inspection not confirmed"),
        Step("refund", refund, undo=Undo("claw_back", claw_back), time_limit=4),
        Step("restock", restock, undo=Undo("unstock", unstock), time_limit=4),
    ],
)  # fmt: skip


@cache
def make_app() -> Celery:
    """The workers' app: the engine with the returns workflow, from the environment."""
    celery = create_app("returns", _settings())
    register(celery, RETURNS)
    return celery


def __getattr__(name: str) -> Any:  # ``celery -A tests.test_engine_returns`` asks for ``app``
    if name == "app":
        return make_app()
    raise AttributeError(name)


# --- the tests ------------------------------------------------------------------------------

_ids = itertools.count()
WORKER_APP = "tests.test_engine_returns"


def returns_client(d: Deployment) -> WorkflowClient:
    celery = create_app("returns-client", d.settings, set_as_current=False)
    return register(celery, RETURNS).client()


def effects(d: Deployment, run: WorkflowClient, run_id: str) -> dict[str, str]:
    return d.redis.hgetall(run.store.companion(run_id, "effects"))


def a_return(**fields: Any) -> Return:
    run_id = f"ret-{next(_ids)}-{time.monotonic_ns()}"
    return Return(id=run_id, item="lamp", amount=Decimal("25.00"), **fields)


def test_retry_with_backoff_then_the_gate_then_done(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(app=WORKER_APP)
    runs = returns_client(d)
    ret = a_return(busy_attempts=2)
    handle = runs.start(ret, run_id=ret.id)
    runs.wait_for(ret.id, lambda v: v.status is RunStatus.WAITING, 30, "waiting at the gate")
    runs.signal(ret.id, "inspection_passed", "approve", by="qa")
    assert handle.result(timeout=30) == "Returned: refunded 25.00, lamp restocked"
    attempts = runs.timeline(ret.id).steps[0].attempts
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    assert [a.error_type for a in attempts[:2]] == ["InspectorBusy"] * 2
    assert [a.retry_in_ms for a in attempts[:2]] == [200, 400]  # the step's own policy
    for earlier, later in itertools.pairwise(attempts):
        gap = (later.started_at - earlier.started_at).total_seconds() * 1000
        assert gap >= (earlier.retry_in_ms or 0) - 50
    assert effects(d, runs, ret.id)["refund:effects"] == "1"


def test_a_worker_killed_mid_step_fails_over(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    for _ in range(2):
        d.start_worker(wait=False, app=WORKER_APP)
    for w in d.workers:
        d.wait_for_worker(w)
    runs = returns_client(d)
    ret = a_return(slow={"refund": 1.5})
    handle = runs.start(ret, run_id=ret.id)
    runs.wait_for(ret.id, lambda v: v.status is RunStatus.WAITING, 30, "waiting at the gate")
    runs.signal(ret.id, "inspection_passed", "approve", by="qa")

    def refund_holder():  # type: ignore[no-untyped-def]
        record = runs.store.record(ret.id)
        if record.get("step") != "refund" or record.get("phase") != "running":
            return None
        pid = int(record["worker"].rsplit(":", 1)[1])
        return next((w for w in d.workers if w.pid == pid), None)

    victim = wait_until(refund_holder, 30, "refund to be running")
    victim.destroy()  # the whole worker, as a lost machine
    assert handle.result(timeout=30).startswith("Returned: refunded 25.00")
    refund_attempts = runs.timeline(ret.id).steps[2].attempts
    assert refund_attempts[0].outcome == "lost" and refund_attempts[-1].outcome == "succeeded"
    assert refund_attempts[-1].worker != refund_attempts[0].worker
    assert effects(d, runs, ret.id)["refund:effects"] == "1", "refunded once"


def test_cancel_undoes_what_was_done(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(app=WORKER_APP)
    runs = returns_client(d)
    ret = a_return(slow={"restock": 1.0})
    handle = runs.start(ret, run_id=ret.id)
    runs.wait_for(ret.id, lambda v: v.status is RunStatus.WAITING, 30, "waiting at the gate")
    runs.signal(ret.id, "inspection_passed", "approve", by="qa")
    runs.wait_for(ret.id, lambda v: v.current_step == "restock" and v.phase == "running", 30,
                  "restock to be running")  # fmt: skip
    assert runs.cancel(ret.id, reason="customer kept it", by="ops").status is RunStatus.RUNNING
    with pytest.raises(RunCancelled) as info:
        handle.result(timeout=30)
    assert info.value.type == "Cancelled" and info.value.message == "customer kept it"
    view = runs.wait(ret.id, timeout=30)
    assert {c.action: c.state for c in view.compensations} == {
        "unstock": "done",
        "claw_back": "done",
    }
    done = effects(d, runs, ret.id)
    assert done["refund:undone"] == "1" and done["restock:undone"] == "1"


def test_a_signal_before_the_gate_counts_when_the_run_gets_there(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(app=WORKER_APP)
    runs = returns_client(d)
    ret = a_return(slow={"inspect": 1.0})
    handle = runs.start(ret, run_id=ret.id)
    runs.wait_for(ret.id, lambda v: v.current_step == "inspect", 30, "inspect under way")
    runs.signal(ret.id, "inspection_passed", "approve", by="early-qa")  # before the gate
    assert runs.get(ret.id).current_step == "inspect", "the run did not jump ahead"
    assert handle.result(timeout=30).startswith("Returned:")
    types = [e.type for e in runs.history(ret.id)]
    assert "gate_waiting" not in types, "it never had to wait"
    decided = [e for e in runs.history(ret.id) if e.type == "gate_decided"]
    assert [(e.data["by"], e.data["early"]) for e in decided] == [("early-qa", True)]
    gate = runs.get(ret.id).gate("inspection_passed")
    assert (gate.state, gate.decision, gate.by) == ("completed", "approved", "early-qa")


def test_a_gate_nobody_decides_times_out(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(app=WORKER_APP)
    runs = returns_client(d)
    ret = a_return()
    handle = runs.start(ret, run_id=ret.id, gate_timeouts={"inspection_passed": 1})
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert (info.value.type, info.value.message) == (
        "InspectionTimeout",
        "Inspection not confirmed",
    )
    assert "refund" not in effects(d, runs, ret.id)

"""A saga of a user's own, run by the engine on real workers: a business trip.

Reserve a flight, reserve a hotel, a manager's approval for trips over 1000, charge
the card; each step has an undo (cancel the flight, cancel the hotel, refund the
card). Written from the engine guide (docs/engine.md) as a user would, with its
effects in a fenced Lua script of its own that numbers every effect and every undo.

Checked: undos run in reverse order of the steps, one at a time (and all at once for a
workflow that opts in); the run reads ``compensating`` while they run and
``failed`` / ``cancelled`` only once they are done, which is also when ``result()``
raises; an undo that keeps failing stays visible; every per-run option acts on the
run it was given to; input the model refuses is refused at ``start()``, and input a
worker cannot read (or a result function that fails) fails the run once, without
re-driving it; the happy path, a flaky step, a non-retryable error, a gate timeout, a
signal before the gate, cancels at three moments and a worker SIGKILLed mid-step, each
with every effect exactly once.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fulfillment.engine import (
    ActivityContext,
    EngineSettings,
    Gate,
    InvalidArgument,
    NonRetryableError,
    RetryPolicy,
    RunCancelled,
    RunFailed,
    RunNotCompleted,
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
from fulfillment.engine.scripts import fenced_script
from fulfillment.engine.settings import load

from .conftest import Server
from .support import Deployment, wait_until

pytestmark = pytest.mark.slow

# --- the user's workflow ------------------------------------------------------------------

EFFECT = """
-- KEYS: 1 the trip's bookings (hash), 2 the run's record.
-- A: token, name (flight | hotel | card), value, undo (true: undo it).
-- Every effect and every undo gets the next number (seq) of the trip.
local A = cjson.decode(ARGV[1])
local why
if A.undo then why = stale_claim(KEYS[2], A.token) else why = stale_attempt(KEYS[2], A.token) end
if why then return cjson.encode({v = 'stale', reason = why}) end
if A.undo then
  if redis.call('HEXISTS', KEYS[1], A.name) == 0 then return cjson.encode({v = 'nothing'}) end
  if redis.call('HSETNX', KEYS[1], A.name .. ':undone', '1') == 1 then
    redis.call('HSET', KEYS[1], A.name .. ':undone_seq', redis.call('HINCRBY', KEYS[1], 'seq', 1))
  end
  redis.call('HINCRBY', KEYS[1], A.name .. ':undos', 1)
  return cjson.encode({v = 'undone'})
end
if redis.call('HSETNX', KEYS[1], A.name, A.value) == 1 then
  redis.call('HINCRBY', KEYS[1], A.name .. ':effects', 1)
  redis.call('HSET', KEYS[1], A.name .. ':seq', redis.call('HINCRBY', KEYS[1], 'seq', 1))
end
return cjson.encode({v = 'ok'})
"""


class Trip(BaseModel):
    """A business trip to book."""

    model_config = ConfigDict(extra="forbid")

    traveller: str = Field(min_length=1)
    destination: str
    amount: Decimal = Field(gt=0)
    flaky: dict[str, int] = {}  # step -> how many attempts fail (retryably) first
    refuse: str | None = None  # step whose service refuses (non-retryable)
    slow: dict[str, float] = {}  # step or undo -> seconds it takes
    undo_fails: dict[str, int] = {}  # undo -> how many tries fail first

    @field_validator("destination")
    @classmethod
    def _served(cls, value: str) -> str:
        # A stricter model in the workers (as after a deploy): what they refuse to read.
        if value in os.environ.get("TRIP_WORKER_REFUSES", "").split(","):
            raise ValueError(f"{value} is not served any more")
        return value


class HotelBusy(Exception):
    """The hotel's system is busy: try again."""


class NoVacancy(NonRetryableError):
    """The hotel is full: the trip cannot be booked."""


def _effect(ctx: ActivityContext | UndoContext, name: str, value: str = "") -> str:
    script = fenced_script(ctx.redis, EFFECT)
    undo = isinstance(ctx, UndoContext)
    args = {"token": ctx.token.as_json(), "name": name, "value": value, "undo": undo}
    out = json.loads(
        script(keys=[ctx.companion("bookings"), ctx.record_key], args=[json.dumps(args)])
    )
    if out["v"] == "stale":
        raise StaleAttempt(out["reason"])
    return str(out["v"])


def _step(ctx: ActivityContext, name: str) -> str:
    trip: Trip = ctx.input
    time.sleep(trip.slow.get(ctx.step, 0))
    if ctx.attempt <= trip.flaky.get(ctx.step, 0):
        raise HotelBusy(f"{ctx.step} busy (attempt {ctx.attempt})")
    if trip.refuse == ctx.step:
        raise NoVacancy(f"no vacancy in {trip.destination}")
    _effect(ctx, name, trip.destination)
    return f"{name} booked ({trip.destination})"


def _undo(ctx: UndoContext, name: str) -> tuple[bool, str]:
    trip: Trip = ctx.input
    time.sleep(trip.slow.get(ctx.action, 0))
    failing = trip.undo_fails.get(ctx.action, 0)
    if (
        failing
        and int(ctx.redis.hincrby(ctx.companion("bookings"), f"{ctx.action}:tries", 1)) <= failing
    ):
        raise HotelBusy(f"{ctx.action}: try again later")
    undone = _effect(ctx, name) == "undone"
    return undone, f"{name} cancelled" if undone else f"no {name} to cancel"


def reserve_flight(ctx: ActivityContext) -> str:
    return _step(ctx, "flight")


def reserve_hotel(ctx: ActivityContext) -> str:
    return _step(ctx, "hotel")


def charge_card(ctx: ActivityContext) -> str:
    return _step(ctx, "card")


def cancel_flight(ctx: UndoContext) -> tuple[bool, str]:
    return _undo(ctx, "flight")


def cancel_hotel(ctx: UndoContext) -> tuple[bool, str]:
    return _undo(ctx, "hotel")


def refund_card(ctx: UndoContext) -> tuple[bool, str]:
    return _undo(ctx, "card")


def booked(results: Mapping[str, str]) -> str:
    if any("(nowhere)" in r for r in results.values()):
        raise ValueError("cannot describe a trip to nowhere")
    return "Trip booked: " + ", ".join(results.values())


def _trip_workflow(name: str, concurrent: bool = False) -> Workflow:
    return Workflow(
        name=name,
        input=Trip,
        summary=lambda t: {"traveller": t.traveller, "destination": t.destination},
        result=booked,
        companions=("bookings",),
        concurrent_undo=concurrent,
        steps=[
            Step("reserve_flight", reserve_flight, undo=Undo("cancel_flight", cancel_flight)),
            Step("reserve_hotel", reserve_hotel, undo=Undo("cancel_hotel", cancel_hotel),
                 retry=RetryPolicy(initial_interval=0.1, maximum_attempts=5)),
            Gate("manager", timeout=30, applies=lambda t: t.amount > 1000,
                 reject_error="TripRejected", timeout_error="ManagerTimeout",
                 timeout_message="No manager decided"),
            Step("charge_card", charge_card, undo=Undo("refund_card", refund_card)),
        ],
    )  # fmt: skip


TRIPS = _trip_workflow("trips")
TRIPS_AT_ONCE = _trip_workflow("trips_at_once", concurrent=True)


@cache
def make_app() -> Celery:
    """The workers' app: both trip workflows, settings from the environment."""
    app = create_app("trips", load(EngineSettings))
    register(app, TRIPS)
    register(app, TRIPS_AT_ONCE)
    return app


def __getattr__(name: str) -> Any:  # ``celery -A tests.test_saga`` asks for ``app``
    if name == "app":
        return make_app()
    raise AttributeError(name)


# --- the deployment ---------------------------------------------------------------------------

WORKER_APP = "tests.test_saga"
_ids = itertools.count()


class Trips:
    """The saga's deployment: two workers, and a client of each workflow."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        app = create_app("trips-client", d.settings, set_as_current=False)
        self.runs = register(app, TRIPS).client()
        self.at_once = register(app, TRIPS_AT_ONCE).client()

    def start(
        self, runs: WorkflowClient | None = None, run_id: str | None = None, **fields: Any
    ) -> tuple[str, Any, WorkflowClient]:
        runs = runs or self.runs
        options = fields.pop("options", None)
        gate_timeouts = fields.pop("gate_timeouts", None)
        trip = {"traveller": "ada", "destination": "Lisbon", "amount": "800", **fields}
        run_id = run_id or f"trip-{next(_ids)}-{time.monotonic_ns()}"
        handle = runs.start(trip, run_id=run_id, options=options, gate_timeouts=gate_timeouts)
        return run_id, handle, runs

    def bookings(self, runs: WorkflowClient, run_id: str) -> dict[str, str]:
        return self.d.redis.hgetall(runs.store.companion(run_id, "bookings"))

    def check(self, runs: WorkflowClient, run_id: str) -> RunStatus:
        """The saga's invariants on one settled run; returns its status."""
        view = runs.wait(run_id, timeout=60)
        assert view.settled, view
        b = self.bookings(runs, run_id)
        for name in ("flight", "hotel", "card"):
            assert int(b.get(f"{name}:effects", 0)) <= 1, f"{name} booked twice: {b}"
        if view.status is RunStatus.COMPLETED:
            assert {"flight", "hotel", "card"} <= set(b), b
            assert not [k for k in b if k.endswith(":undone")], f"completed but undone: {b}"
            return view.status
        for name in ("flight", "hotel", "card"):
            if name in b:
                assert b.get(f"{name}:undone") == "1", f"{view.status}: {name} not undone: {b}"
        # reverse order: the later a step's effect, the earlier its undo
        done = sorted((int(b[f"{n}:seq"]), n) for n in ("flight", "hotel", "card") if n in b)
        undone = sorted((int(b[f"{n}:undone_seq"]), n) for _, n in done)
        assert [n for _, n in undone] == [n for _, n in reversed(done)], b
        assert_one_at_a_time(runs, run_id, view.compensations)
        return view.status


def assert_one_at_a_time(runs: WorkflowClient, run_id: str, compensations: list[Any]) -> None:
    """Each undo started only after the one before it (in the run's list) was done."""
    events = runs.history(run_id)
    order = [c.action for c in compensations]

    def first(kind: str, action: str) -> int:
        return next(
            i for i, e in enumerate(events) if e.type == kind and e.data.get("action") == action
        )

    for before, after in itertools.pairwise(order):
        assert first("compensated", before) < first("compensation_started", after), (
            f"{after} started before {before} was done: {[(e.type, e.data) for e in events]}"
        )


@pytest.fixture(scope="module")
def trips(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trips]:
    db = server.acquire()
    workdir: Path = tmp_path_factory.mktemp("trips")
    d = Deployment(f"{server.url}/{db}", workdir)
    try:
        for _ in range(2):
            d.start_worker(
                wait=False, app=WORKER_APP, concurrency=2, TRIP_WORKER_REFUSES="Atlantis"
            )
        for w in d.workers:
            d.wait_for_worker(w)
        yield Trips(d)
    finally:
        d.close()
        server.release(db)


def _status(runs: WorkflowClient, run_id: str) -> RunStatus:
    return runs.get(run_id).status


# --- undo order and the compensating state ---------------------------------------------------


def test_happy_path_books_everything_once(trips: Trips) -> None:
    run_id, handle, runs = trips.start()
    assert handle.result(timeout=30) == (
        "Trip booked: flight booked (Lisbon), hotel booked (Lisbon), card booked (Lisbon)"
    )
    assert trips.check(runs, run_id) is RunStatus.COMPLETED


def test_a_cancel_undoes_in_reverse_order_and_reads_cancelled_only_once_undone(
    trips: Trips,
) -> None:
    run_id, handle, runs = trips.start(
        slow={"charge_card": 0.6, "refund_card": 0.4, "cancel_hotel": 0.4, "cancel_flight": 0.4}
    )
    runs.wait_for(run_id, lambda v: v.current_step == "charge_card" and v.phase == "running", 30,
                  "charge_card to run")  # fmt: skip
    runs.cancel(run_id, reason="meeting moved", by="ops")
    view = runs.wait_for(run_id, lambda v: v.status is RunStatus.COMPENSATING, 30, "compensating")
    assert view.ends_as is RunStatus.CANCELLED and view.failure is not None
    assert [c.action for c in view.compensations] == [
        "refund_card",
        "cancel_hotel",
        "cancel_flight",
    ]
    # while it compensates, the effects are still (partly) in place: the status says so
    seen = runs.wait_for(run_id, lambda v: any(c.state == "running" for c in v.compensations),
                         30, "an undo running")  # fmt: skip
    assert seen.status is RunStatus.COMPENSATING
    assert [c.state for c in seen.compensations].count("waiting") >= 1, seen.compensations
    with pytest.raises(RunCancelled) as info:
        handle.result(timeout=30)
    # result() raises only once every effect is undone
    b = trips.bookings(runs, run_id)
    assert all(b.get(f"{n}:undone") == "1" for n in ("flight", "hotel", "card")), b
    assert not isinstance(info.value, RunFailed), "a cancel is not a failure"
    assert isinstance(info.value, RunNotCompleted)
    assert info.value.message == "meeting moved" and "cancelled: meeting moved" in str(info.value)
    assert trips.check(runs, run_id) is RunStatus.CANCELLED
    types = [e.type for e in runs.history(run_id)]
    assert (
        types.index("run_compensating") < types.index("compensated") < types.index("run_cancelled")
    )
    assert types[-1] == "run_cancelled"


def test_a_workflow_may_opt_in_to_concurrent_undo(trips: Trips) -> None:
    run_id, handle, runs = trips.start(
        runs=trips.at_once, refuse="charge_card", slow={"cancel_hotel": 0.5, "cancel_flight": 0.5}
    )
    with pytest.raises(RunFailed):
        handle.result(timeout=30)
    events = runs.history(run_id)
    started = [e.at for e in events if e.type == "compensation_started"]
    done = [e.at for e in events if e.type == "compensated"]
    assert len(started) == 2 and max(started) < min(done), "both undos ran at the same time"
    b = trips.bookings(runs, run_id)
    assert b["flight:undone"] == "1" and b["hotel:undone"] == "1" and "card" not in b


def test_an_undo_that_keeps_failing_stays_visible_until_it_succeeds(trips: Trips) -> None:
    run_id, handle, runs = trips.start(refuse="charge_card", undo_fails={"cancel_hotel": 3})
    view = runs.wait_for(
        run_id, lambda v: any(c.state == "retrying" and c.failures >= 2 for c in v.compensations),
        30, "cancel_hotel retrying",
    )  # fmt: skip
    assert view.status is RunStatus.COMPENSATING and view.ends_as is RunStatus.FAILED
    hotel = next(c for c in view.compensations if c.action == "cancel_hotel")
    assert hotel.last_error and "HotelBusy" in hotel.last_error
    flight = next(c for c in view.compensations if c.action == "cancel_flight")
    assert flight.state == "waiting", "the flight is cancelled only after the hotel"
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "NoVacancy"
    assert trips.check(runs, run_id) is RunStatus.FAILED
    claims = runs.timeline(run_id).compensations[0].claims
    assert [c.outcome for c in claims] == ["failed", "failed", "failed", "done"]


# --- the outside saga's scenarios --------------------------------------------------------------


def test_a_flaky_step_is_retried_and_the_trip_booked(trips: Trips) -> None:
    run_id, handle, runs = trips.start(flaky={"reserve_hotel": 2})
    assert handle.result(timeout=30).startswith("Trip booked")
    attempts = runs.timeline(run_id).steps[1].attempts
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    assert trips.check(runs, run_id) is RunStatus.COMPLETED


def test_a_non_retryable_error_fails_the_trip_and_undoes_the_flight(trips: Trips) -> None:
    run_id, handle, runs = trips.start(refuse="reserve_hotel")
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert (info.value.type, info.value.message) == ("NoVacancy", "no vacancy in Lisbon")
    assert info.value.compensations == ["flight cancelled"]
    assert trips.check(runs, run_id) is RunStatus.FAILED
    assert "hotel" not in trips.bookings(runs, run_id)


def test_a_gate_timeout_undoes_hotel_then_flight(trips: Trips) -> None:
    run_id, handle, runs = trips.start(amount="5000", gate_timeouts={"manager": 0.5})
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert (info.value.type, info.value.message) == ("ManagerTimeout", "No manager decided")
    assert info.value.compensations == ["hotel cancelled", "flight cancelled"]
    assert trips.check(runs, run_id) is RunStatus.FAILED


def test_a_signal_before_the_gate_counts(trips: Trips) -> None:
    run_id, handle, runs = trips.start(amount="5000", slow={"reserve_flight": 0.5})
    runs.signal(run_id, "manager", "approve", by="boss")  # the run is not at the gate yet
    assert handle.result(timeout=30).startswith("Trip booked")
    assert "gate_waiting" not in [e.type for e in runs.history(run_id)]
    assert trips.check(runs, run_id) is RunStatus.COMPLETED


def test_cancels_at_three_moments(trips: Trips) -> None:
    # 1. while a step runs: it finishes first, then both bookings are undone, hotel first
    mid, h1, runs = trips.start(slow={"reserve_hotel": 0.6})
    runs.wait_for(mid, lambda v: v.current_step == "reserve_hotel" and v.phase == "running", 30,
                  "the hotel step to run")  # fmt: skip
    assert runs.cancel(mid, reason="changed plans").status is RunStatus.RUNNING  # requested
    # 2. at the gate, waiting for the manager
    gate, h2, _ = trips.start(amount="5000")
    runs.wait_for(gate, lambda v: v.status is RunStatus.WAITING, 30, "waiting at the gate")
    runs.cancel(gate, reason="not needed")
    # 3. between steps: the hotel step waits out its backoff after a failed attempt
    early, h3, _ = trips.start(flaky={"reserve_hotel": 1},
                               options={"reserve_hotel": {"initial_interval": 20}})  # fmt: skip
    runs.wait_for(early, lambda v: v.retrying, 30, "the hotel step to wait for its retry")
    assert runs.cancel(early, reason="typo").status is RunStatus.COMPENSATING
    for run_id, handle in ((mid, h1), (gate, h2), (early, h3)):
        with pytest.raises(RunCancelled):
            handle.result(timeout=30)
        assert trips.check(runs, run_id) is RunStatus.CANCELLED
    assert [c.action for c in runs.get(mid).compensations] == ["cancel_hotel", "cancel_flight"]
    assert [c.action for c in runs.get(gate).compensations] == ["cancel_hotel", "cancel_flight"]


def test_a_worker_killed_mid_step_books_everything_once(trips: Trips) -> None:
    run_id, handle, runs = trips.start(slow={"reserve_hotel": 1.5},
                                       options={"reserve_hotel": {"time_limit": 3}})  # fmt: skip

    def hotel_holder():  # type: ignore[no-untyped-def]
        record = runs.store.record(run_id)
        if record.get("step") != "reserve_hotel" or record.get("phase") != "running":
            return None
        pid = int(record["worker"].rsplit(":", 1)[1])
        return next((w for w in trips.d.workers if w.pid == pid), None)

    victim = wait_until(hotel_holder, 30, "the hotel step to run")
    victim.destroy()
    trips.d.start_worker(wait=False, app=WORKER_APP, concurrency=2, TRIP_WORKER_REFUSES="Atlantis")
    assert handle.result(timeout=60).startswith("Trip booked")
    attempts = runs.timeline(run_id).steps[1].attempts
    assert attempts[0].outcome == "lost" and attempts[-1].outcome == "succeeded"
    assert trips.check(runs, run_id) is RunStatus.COMPLETED


# --- per-run options ----------------------------------------------------------------------------


def test_a_run_time_limit_acts_on_that_run(trips: Trips) -> None:
    # The deployment's limit is 1 s: this run gives its slow flight step 3 s.
    longer, h1, runs = trips.start(slow={"reserve_flight": 1.5},
                                   options={"reserve_flight": {"time_limit": 3}})  # fmt: skip
    # ...and this one cuts it at 0.5 s, twice, then gives up.
    shorter, h2, _ = trips.start(slow={"reserve_flight": 1.5},
                                 options={"reserve_flight": {"time_limit": 0.5,
                                                             "maximum_attempts": 2}})  # fmt: skip
    assert h1.result(timeout=30).startswith("Trip booked")
    assert [a.outcome for a in runs.timeline(longer).steps[0].attempts] == ["succeeded"]
    with pytest.raises(RunFailed) as info:
        h2.result(timeout=30)
    assert info.value.type == "StepTimeout" and "0.5s time limit" in info.value.message
    attempts = runs.timeline(shorter).steps[0].attempts
    assert [a.outcome for a in attempts] == ["failed", "failed"]
    assert all((a.duration_ms or 0) < 1400 for a in attempts), attempts


def test_a_run_time_limit_applies_to_its_undo_too(trips: Trips) -> None:
    run_id, handle, runs = trips.start(refuse="reserve_hotel", slow={"cancel_flight": 1.5},
                                       options={"reserve_flight": {"time_limit": 3}})  # fmt: skip
    with pytest.raises(RunFailed):
        handle.result(timeout=30)
    claims = runs.timeline(run_id).compensations[0].claims
    assert [c.outcome for c in claims] == ["done"], claims


def test_run_retry_options_act_on_that_run(trips: Trips) -> None:
    run_id, handle, runs = trips.start(
        flaky={"reserve_hotel": 3},
        options={"reserve_hotel": {"initial_interval": 0.05, "backoff_coefficient": 3,
                                   "maximum_interval": 0.3}},
    )  # fmt: skip
    assert handle.result(timeout=30).startswith("Trip booked")
    attempts = runs.timeline(run_id).steps[1].attempts
    assert [a.retry_in_ms for a in attempts[:3]] == [50, 150, 300]


def test_run_non_retryable_error_types_act_on_that_run(trips: Trips) -> None:
    run_id, handle, runs = trips.start(
        flaky={"reserve_hotel": 1},
        options={"reserve_hotel": {"non_retryable_error_types": ["HotelBusy"]}},
    )
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "HotelBusy"
    assert len(runs.timeline(run_id).steps[1].attempts) == 1
    assert trips.check(runs, run_id) is RunStatus.FAILED


def test_bad_run_options_are_refused_and_nothing_is_stored(trips: Trips) -> None:
    for n, (options, named) in enumerate((
        ({"reserve_flight": {"time_limit": -1}}, "time_limit"),
        ({"reserve_flight": {"retries": 3}}, "retries"),
        ({"teleport": {"time_limit": 3}}, "teleport"),
        ({"reserve_hotel": {"maximum_attempts": True}}, "maximum_attempts"),
    )):  # fmt: skip
        run_id = f"bad-options-{n}-{time.monotonic_ns()}"
        with pytest.raises(InvalidArgument, match=named) as info:
            trips.start(run_id=run_id, options=options)
        assert "\n" not in str(info.value)
        assert trips.runs.store.status(run_id) is None, "nothing stored"
        assert not trips.d.redis.exists(trips.runs.rt.space.run(run_id).history)


# --- poison runs ------------------------------------------------------------------------------


def test_input_the_model_refuses_is_refused_at_start(trips: Trips) -> None:
    runs = trips.runs
    for bad, field in (
        ({"traveller": "", "destination": "Oslo", "amount": "1"}, "traveller"),
        ({"traveller": "ada", "destination": "Oslo", "amount": "-5"}, "amount"),
        ({"traveller": "ada", "destination": "Oslo", "amount": "1", "seat": "12A"}, "seat"),
        ({"traveller": "ada", "amount": "1"}, "destination"),
    ):
        run_id = f"bad-{field}-{time.monotonic_ns()}"
        with pytest.raises(InvalidArgument, match=field) as info:
            runs.start(bad, run_id=run_id)
        assert "\n" not in str(info.value)
        assert runs.store.status(run_id) is None, "nothing stored"
        assert not trips.d.redis.exists(runs.rt.space.run(run_id).history)


def test_the_model_reaches_the_definition_functions(trips: Trips) -> None:
    run_id, handle, runs = trips.start(destination="Porto")
    assert handle.result(timeout=30).startswith("Trip booked")
    assert runs.get(run_id).summary == {"traveller": "ada", "destination": "Porto"}


def test_input_a_worker_cannot_read_fails_the_run_once(trips: Trips) -> None:
    run_id, handle, runs = trips.start(destination="Atlantis")  # the workers' model refuses it
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "InvalidInput"
    assert "destination" in info.value.message and "not served" in info.value.message
    types = [e.type for e in runs.history(run_id)]
    assert types.count("attempt_started") == 1 and "redriven" not in types, types
    # settled, and nothing left for the watchdog to re-drive
    assert trips.d.redis.zscore(runs.rt.space.due, run_id) is None
    assert trips.bookings(runs, run_id) == {}


def test_a_failing_result_function_fails_the_run_and_undoes_every_step(trips: Trips) -> None:
    run_id, handle, runs = trips.start(destination="nowhere")
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "ResultError" and "nowhere" in info.value.message
    assert [c.action for c in runs.get(run_id).compensations] == [
        "refund_card", "cancel_hotel", "cancel_flight",
    ]  # fmt: skip
    assert trips.check(runs, run_id) is RunStatus.FAILED

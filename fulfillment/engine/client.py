"""The client of a workflow: start runs, signal their gates, cancel, wait, read history.

::

    runs = register(app, returns).client()
    handle = runs.start({"item": "lamp"}, run_id="r-1")
    runs.signal("r-1", "inspection_passed", "approve", by="alice")
    print(handle.result(timeout=60))
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import tracing
from .delivery import Delivery
from .errors import ConfigError, InvalidArgument, RunNotFound, SignalError
from .keys import RunStatus, message_id
from .metrics import RunMetrics
from .replies import (
    Decided,
    Dispatch,
    Ended,
    Exists,
    Finished,
    Kind,
    Missing,
    NotLive,
    NotRequired,
    Reply,
)
from .runtime import WorkflowRuntime
from .validation import shown_text
from .views import Event, RunView, Timeline

log = logging.getLogger(__name__)


#: what a run id may be: it is part of Redis keys, Celery task ids and URLs
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_run_id(run_id: object, noun: str = "run") -> str:
    """``run_id`` if it is a valid run id, else :class:`InvalidArgument` saying why."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise InvalidArgument(
            f"invalid {noun} id {str(run_id)[:40]!r}: 1-128 letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit"
        )
    return run_id


def default_actor() -> str:
    """Who acts when nobody is named: the local user."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def actor(by: str | None) -> str:
    """Who acts (``by``, or the local user): one printable line of at most 200 characters."""
    return shown_text("by", by if by is not None else default_actor(), 200)


def why(reason: str | None, default: str) -> str:
    """The reason given (or ``default``): one printable line of at most 1000 characters."""
    return shown_text("reason", reason or default, 1000)


def canonical(data: Any) -> str:
    """Stable JSON (sorted keys) of a pydantic model or JSON-able value."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def digest(data: Any) -> str:
    return hashlib.sha256(canonical(data).encode()).hexdigest()


class WorkflowClient:
    """Talks to the runs of one registered workflow."""

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.delivery = Delivery(runtime)
        self.workflow = runtime.workflow
        self.errors = runtime.workflow.errors
        self.noun = runtime.workflow.noun

    # --- starting and reading --------------------------------------------------------

    def start(
        self,
        input: Any,
        *,
        run_id: str,
        options: dict[str, dict[str, Any]] | None = None,
        gate_timeouts: Mapping[str, float] | None = None,
        fields: Mapping[str, str] | None = None,
        event: Mapping[str, Any] | None = None,
        content_digest: str | None = None,
    ) -> RunHandle:
        """Store the run and send its first step. Idempotent on ``run_id``.

        ``input`` is validated into the workflow's ``input`` model (a model instance, a
        dict or JSON text); a refusal raises :class:`InvalidArgument` naming the field,
        and nothing is stored or sent. The definition's functions (``summary``, gates'
        ``applies``) get the model. Starting the same input under the same id again
        returns a handle to the existing run; a different input raises
        :class:`RunConflict`. ``options``: step options for this run only, by step (the
        last layer of each step's policy: ``time_limit``, ``initial_interval``, ...);
        ``gate_timeouts``: seconds, per gate; ``fields``: extra fields of the run record
        (the workflow's own); ``content_digest``: what identifies the input (default: a
        hash of it).
        """
        attributes = {"run.id": run_id, "workflow": self.rt.workflow.name}
        with tracing.span(f"{self.rt.workflow.name}.start", attributes=attributes):
            return self._start(input, run_id, options, gate_timeouts, fields, event, content_digest)

    def _start(
        self,
        input: Any,
        run_id: str,
        options: dict[str, dict[str, Any]] | None,
        gate_timeouts: Mapping[str, float] | None,
        fields: Mapping[str, str] | None,
        event: Mapping[str, Any] | None,
        content_digest: str | None,
    ) -> RunHandle:
        wf = self.rt.workflow
        check_run_id(run_id, self.noun)
        input = self.rt.validate_input(input)
        timeouts = {g: self.check_timeout(g, t) for g, t in (gate_timeouts or {}).items()}
        try:
            plan = self.rt.plan(input, options=options, gate_timeouts=timeouts)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        names = plan.names
        summary = dict(wf.summary(input)) if wf.summary else {}
        first = self.delivery.step_message(run_id, names[0], 1, summary, plan.limits)
        held = self.delivery.hold(first)  # the first message goes out with the run
        record = {"cancel_error": wf.cancel_error, **_trace_field(), **(fields or {})}
        if plan.limits:
            record["limits"] = json.dumps(plan.limits)
        if wf.concurrent_undo:
            record["undo_mode"] = "concurrent"
        out = self.store.create(
            run_id,
            workflow=wf.name,
            input=wf.encode(input) if wf.encode else canonical(input),
            digest=content_digest or digest(input),
            summary=json.dumps(summary),
            plan=plan.steps,
            fields=record,
            event=dict(event or {}),
            outbox=held,
            outbox_step=names[0] if held is not None else None,
        )
        if isinstance(out, Exists) and out.kind is Kind.CONFLICT:
            raise self.errors.conflict(
                f"{self.noun} id {run_id!r} is already used by a different {self.noun} "
                f"(status {out.status})"
            )
        if out.kind is Kind.CREATED and held is None:
            # stored durably: if the broker cannot take it, the watchdog sends it
            self.delivery.or_unsent(
                run_id, [message_id(run_id, names[0], 1)], lambda: first.apply_async()
            )
        return RunHandle(self, run_id)

    def check_timeout(self, gate: str, seconds: object) -> float:
        """``seconds`` as a gate's timeout for one run, or :class:`InvalidArgument`."""
        maximum = self.rt.settings.gate_timeout_max
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidArgument(f"{gate} timeout must be a number of seconds, not {seconds!r}")
        if not math.isfinite(seconds) or not 0 < seconds <= maximum:
            raise InvalidArgument(
                f"{gate} timeout must be more than 0 and at most {maximum:g} seconds "
                f"(got {seconds!r})"
            )
        return float(seconds)

    def handle(self, run_id: str) -> RunHandle:
        """A handle to an existing run."""
        self.get(run_id)
        return RunHandle(self, run_id)

    def view(self, record: dict[str, str]) -> RunView:
        return RunView.from_record(record, [g.name for g in self.rt.workflow.gates])

    def get(self, run_id: str) -> RunView:
        """The run's current state. Raises :class:`RunNotFound`."""
        record = self.store.record(run_id)
        if not record:
            raise self.errors.not_found(run_id, self.noun)
        return self.view(record)

    def history(self, run_id: str) -> list[Event]:
        """Every event of the run, oldest first, named in the workflow's words."""
        return [e.labelled(self.workflow.label) for e in self._events(run_id)]

    def _events(self, run_id: str) -> list[Event]:
        events = [Event.from_entry(*e) for e in self.store.history(run_id)]
        if not events and not self.store.record(run_id):
            raise self.errors.not_found(run_id, self.noun)
        return events

    def timeline(self, run_id: str) -> Timeline:
        """Every step and every attempt of the run, rebuilt from its history."""
        return Timeline.build(self.get(run_id), self._events(run_id), self.workflow.label)

    def list(
        self, status: str | None = None, *, retrying: bool = False, limit: int = 50
    ) -> list[RunView]:
        """Newest runs first, optionally only one status (the engine's name or the
        workflow's word for it) or only those retrying."""
        if status is not None:
            try:
                status = self.workflow.status_named(status).value
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        ids = self.store.run_ids(status, retrying=retrying, limit=limit)
        return [self.view(r) for r in self.store.records(ids) if r]

    def counts(self) -> dict[str, int]:
        """Runs per status now (in the workflow's words), and ``retrying``: the status
        indexes' sizes, in one round trip (one per node of a cluster)."""
        return {
            (s if s == "retrying" else self.workflow.label(s)): n
            for s, n in self.store.counts().items()
        }

    def metrics(self) -> RunMetrics:
        """What the workflow's runs did (every counted event, attempt and undo outcome,
        duration and gate wait histograms) and how many are in each status now."""
        return RunMetrics.read(self.store.metrics(), self.store.counts(), self.workflow.label)

    # --- waiting ------------------------------------------------------------------------

    def wait(self, run_id: str, timeout: float | None = None) -> RunView:
        """Block until the run is finished and its compensations ran; return it."""
        self.wait_settled(run_id, timeout)
        return self.get(run_id)

    def wait_settled(
        self, run_id: str, timeout: float | None = None, *, known: bool = False
    ) -> dict[str, Any]:
        """Block until the run is settled; return how it ended (``status``, ``result``).

        Blocks on the run's doorbell, so it wakes once, when the run is settled, not
        on each of its events. ``known``: the run was seen to exist (a handle), so a
        missing run is only noticed after the first block of at most 5 s.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not known and self.store.status(run_id) is None:
            raise self.errors.not_found(run_id, self.noun)
        while True:
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            # at most 5 s at a time: then look again (e.g. the run expired meanwhile)
            outcome = self.store.wait_settled(run_id, max(min(remaining, 5.0), 0.001))
            if outcome is not None:
                return outcome
            status = self.store.status(run_id)
            if status is None:
                raise self.errors.not_found(run_id, self.noun)
            if deadline is not None and time.monotonic() >= deadline:
                raise self.errors.timeout(
                    f"{self.noun} {run_id} not finished after {timeout}s "
                    f"(status {self.workflow.label(status)})"
                )

    def wait_for(
        self,
        run_id: str,
        condition: Callable[[RunView], bool],
        timeout: float | None = None,
        what: str = "in the expected state",
    ) -> RunView:
        """Block until ``condition(view)`` holds; return that view.

        Wakes on the run's own history stream (XREAD BLOCK): every state change appends
        an event, so this returns as soon as it can, without polling.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        record, last = self.store.snapshot(run_id)
        while True:
            if not record:
                raise self.errors.not_found(run_id, self.noun)
            view = self.view(record)
            if condition(view):
                return view
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise self.errors.timeout(
                    f"{self.noun} {run_id} not {what} after {timeout}s "
                    f"(status {self.workflow.label(view.status)})"
                )
            last = (
                self.store.wait_for_event(run_id, last, int(min(remaining, 5.0) * 1000) or 1)
                or last
            )
            record = self.store.record(run_id)

    # --- signals and cancel -------------------------------------------------------------

    def _refused(self, run_id: str, action: str, out: Reply) -> SignalError | RunNotFound | None:
        """Why ``action`` did not apply, as the workflow's error; None if it did."""
        what = f"cannot {action} {self.noun} {run_id}"
        refused = self.errors.refused
        if isinstance(out, Missing):
            return self.errors.not_found(run_id, self.noun)
        if isinstance(out, Finished):
            done = f" ({out.gate} {out.decision} by {out.by})" if out.decision else ""
            if out.status == RunStatus.COMPENSATING:
                return refused(f"{what}: it has ended and is undoing its effects "
                               f"(compensating){done}")  # fmt: skip
            return refused(f"{what}: it is already {self.workflow.label(out.status)}{done}")
        if isinstance(out, Decided):
            return refused(f"{what}: {out.gate} already decided ({out.decision} by {out.by})")
        if isinstance(out, NotRequired):
            return refused(f"{what}: it does not need {out.gate}")
        if isinstance(out, NotLive):
            return refused(f"{what}: {out.reason}")
        return None

    def signal(
        self, run_id: str, gate: str, decision: str, *, by: str | None = None, reason: str = ""
    ) -> RunView:
        """Approve (``decision="approve"``) or reject a gate of the run.

        A decision sent before the run reached the gate counts when it gets there;
        one at or after the gate's deadline finds it timed out. Raises
        :class:`SignalError` if the gate is already decided or the run finished.
        """
        if decision not in ("approve", "reject"):
            raise InvalidArgument(f"decision must be approve or reject, not {decision!r}")
        if gate not in {g.name for g in self.rt.workflow.gates}:
            raise InvalidArgument(f"{self.rt.workflow.name} has no gate {gate!r}")
        who = actor(by)
        reason = why(reason, f"Rejected by {who}") if decision == "reject" else ""
        out = self.store.signal(run_id, gate, decision, by=who, reason=reason)
        self.delivery.act(run_id, out)
        if isinstance(out, Dispatch | Ended):  # the wait at the gate ended: a worker traces it
            self.delivery.trace_gate(run_id, gate)
        refused = self._refused(run_id, decision, out)
        if refused is not None:
            raise refused
        return self.get(run_id)

    def cancel(self, run_id: str, *, reason: str | None = None, by: str | None = None) -> RunView:
        """Cancel a run that has not finished.

        Between steps it is cancelled at once; while a step runs, that step finishes
        first (or is presumed lost), then the run is cancelled. Effects already made
        are compensated.
        """
        who = actor(by)
        out = self.store.cancel(run_id, by=who, reason=why(reason, f"Cancelled by {who}"))
        self.delivery.act(run_id, out)
        refused = self._refused(run_id, "cancel", out)
        if refused is not None:
            raise refused
        view = self.get(run_id)
        for gate in view.gates:  # a cancel that ended a wait at a gate: a worker traces it
            if gate.decision == "cancelled" and gate.by == who:
                self.delivery.trace_gate(run_id, gate.name)
        return view

    def retry_now(self, run_id: str, *, by: str | None = None) -> RunView:
        """Run a step that waits out its retry backoff at once.

        The step is queued again under a new epoch, so the retry message a worker
        holds for later finds itself stale. Raises :class:`SignalError` if no step of
        the run waits for a retry.
        """
        out = self.store.retry_now(run_id, by=actor(by))
        self.delivery.act(run_id, out)
        refused = self._refused(run_id, "retry", out)
        if refused is not None:
            raise refused
        return self.get(run_id)

    def resume(self, run_id: str, step: str, *, by: str | None = None) -> RunView:
        """Run a failed or cancelled run again from ``step`` (Temporal's reset).

        It runs under a new epoch. An earlier step is kept only while its effect is
        still in place: one whose effect was undone (its compensation ran), or that
        never completed, runs again, and the run resumes from the first such step.
        A step done again after its undo acts anew (a refunded payment is charged
        again: its fencing token has a new round). Raises :class:`SignalError` if the
        run is not failed or cancelled, a compensation has not finished, or the run
        has no such step.
        """
        steps = [s.name for s in self.rt.workflow.steps]
        if step not in steps:
            raise InvalidArgument(
                f"{self.rt.workflow.name} has no step {step!r}; steps are {', '.join(steps)}"
            )
        out = self.store.resume(run_id, step, by=actor(by))
        self.delivery.act(run_id, out)
        refused = self._refused(run_id, f"resume {step} of", out)
        if refused is not None:
            raise refused
        return self.get(run_id)


def _trace_field() -> dict[str, str]:
    """The run's trace context, kept in its record (tracing on, inside the start span)."""
    parent = tracing.current_traceparent() if tracing.enabled() else None
    return {tracing.FIELD: parent} if parent else {}


class RunHandle:
    """A started run: ask for its state, wait for its result, read its history."""

    def __init__(self, client: WorkflowClient, run_id: str) -> None:
        self.client = client
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.client.rt.workflow.name} {self.id}>"

    def status(self) -> RunStatus:
        return self.client.get(self.id).status

    def view(self) -> RunView:
        return self.client.get(self.id)

    def history(self) -> list[Event]:
        return self.client.history(self.id)

    def result(self, timeout: float | None = None) -> str:
        """Wait for the run to settle; return its result or raise.

        A run that fails or is cancelled undoes its effects first: this returns (raises)
        only once they are undone. Raises :class:`RunFailed` or :class:`RunCancelled`
        (both :class:`RunNotCompleted`, with ``type``, ``message``, ``compensations``;
        a cancel is not a ``RunFailed``), or :class:`ResultTimeout`.
        """
        outcome = self.client.wait_settled(self.id, timeout, known=True)
        if outcome["status"] == RunStatus.COMPLETED:
            return str(outcome["result"])
        view = self.client.get(self.id)
        failure = view.failure
        ftype = failure.type if failure else view.status.value
        message = failure.message if failure else ""
        errors = self.client.errors
        cls = errors.cancelled if view.status is RunStatus.CANCELLED else errors.failed
        raise cls(self.id, ftype, message, view.compensated, self.client.noun)

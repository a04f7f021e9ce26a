"""The Celery tasks of a registered workflow, generated from its definition.

Every step gets a task, every undo a task, every gate two (one enters the wait and
schedules the timeout, one times it out). Nothing is written by hand per step. Task
names come from the definition (``Step.task_name``) or are ``<workflow prefix>.<step>``.

A step's task is one straight path::

    begin (begin.lua)  ->  the activity  ->  record (complete.lua | retry.lua | fail.lua)
                                                    |
                                          Delivery.act on the verdict

``begin`` says whether this message is the live one and hands over the run's input,
the step's policy and the run's plan; the activity runs; its outcome is recorded by
one script, which on success also pushes the next step's message built beforehand
(the outbox, where the broker is the store's Redis); the delivery then sends whatever
else the verdict asks for, and the task ends the way Celery and Flower expect
(returned, retried, failed, or skipped).

Retries: the step's policy decides *what* is retried (anything but a
:class:`~fulfillment.engine.errors.NonRetryableError` or a type the policy names) and
``retry.lua`` *when* (Temporal's backoff, from the run's plan); the task's own
message is then sent again with Celery's retry. Celery's autoretry only covers the
case of Redis being unreachable before an attempt began.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from . import tracing
from .context import ActivityContext, UndoContext
from .definition import Gate, Step, Undo
from .delivery import Delivery
from .errors import InvalidInput, NonRetryableError, ResultError, StaleAttempt, StepTimeout
from .fencing import AttemptToken, UndoToken
from .identity import worker_id
from .policy import StepPolicy
from .replies import (
    US,
    AlreadyDone,
    BeginReply,
    Claimed,
    CompleteReply,
    Early,
    Ended,
    FailReply,
    Kind,
    NotLive,
    RetryLater,
    RetryReply,
    Started,
    Undone,
    Waiting,
)
from .runtime import WorkflowRuntime
from .validation import field_path, one_line, problems

log = logging.getLogger(__name__)


class EngineTask(Task):
    """Base of every generated task: late acks, no result, JSON arguments.

    Redis out of reach, or refusing writes for now, before the attempt began (after the
    client's own retries): the message is sent again a second later (Celery's
    autoretry), or, if that send fails too, handed back to the broker: never dropped.
    Any other Redis error (a script that fails) is not retried by the task: the run's
    watchdog re-drives it with backoff.
    """

    acks_late = True
    ignore_result = True
    typing = False
    max_retries = None
    default_retry_delay = 1
    autoretry_for = (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.OutOfMemoryError,
        redis.exceptions.ReadOnlyError,
        OSError,
    )
    # a business refusal is part of normal operation: no ERROR with a traceback
    throws = (NonRetryableError,)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry; a message whose re-send fails goes back to the broker
        (``Reject(requeue=True)``) instead of being dropped (Celery rejects it for good)."""
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue:
                raise
            log.warning("%s[%s]: could not send it again (%s); handing it back to the broker",
                        self.name, self.request.id, exc.reason)  # fmt: skip
            raise Reject(exc.reason, requeue=True) from None


def describe(exc: BaseException) -> tuple[str, str]:
    """(error type, message) of an exception, as recorded in the history."""
    return type(exc).__name__, str(exc) or type(exc).__name__


def _iso(micros: int | None) -> str:
    moment = datetime.fromtimestamp((micros or 0) / US, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def _first_line(exc: BaseException) -> str:
    """One line saying what ``exc`` is (a pydantic error: every field it names)."""
    if isinstance(exc, ValidationError):
        return one_line("", problems(exc, field_path))
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _redelivered(request: Any) -> bool:
    """Did the broker deliver this message before (its worker died before acking it)?"""
    return bool((request.delivery_info or {}).get("redelivered"))


@contextlib.contextmanager
def _traced(name: str, request: Any, attributes: dict[str, Any]) -> Iterator[Any]:
    """The span of an attempt or a compensation, in the trace its message carried; a
    retry, a discarded result or a failure that leaves it is its outcome."""
    with tracing.span(name, tracing.from_request(request), attributes) as current:
        try:
            yield current
        except Retry:
            tracing.set_outcome(current, "retried")
            raise
        except Ignore:
            tracing.set_outcome(current, "discarded")
            raise
        except Exception as exc:
            tracing.set_outcome(current, "failed", error=type(exc).__name__)
            raise


# --- steps ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: its result (and the run's, after its last step), or an error.

    ``retryable``: the policy retries ``error``. ``refused``: for an error that is not
    retried, the step did nothing (a business refusal), so it needs no undo.
    """

    result: str | None = None
    final: str | None = None
    error: Exception | None = None
    retryable: bool = False
    refused: bool = True


class StepTask:
    """Runs one attempt of one step: begin, the activity, record, deliver."""

    def __init__(self, rt: WorkflowRuntime, delivery: Delivery, step: Step) -> None:
        self.rt = rt
        self.delivery = delivery
        self.step = step

    def __call__(self, task: Task, run_id: str, epoch: int) -> str:
        request = task.request
        request.chain = None  # a message of an earlier version may carry a chain: never sent
        begun = self.rt.store.begin(run_id, self.step.name, epoch, request.id, worker_id())
        if not isinstance(begun, Started):
            self.not_live(task, run_id, epoch, begun)
        token = AttemptToken(run_id, self.step.name, epoch, begun.attempt, begun.round)
        attributes = {"run.id": run_id, "workflow": self.rt.workflow.name,
                      "step": self.step.name, "attempt": token.attempt, "epoch": epoch,
                      "worker": worker_id()}  # fmt: skip
        name = f"{self.rt.workflow.name}.step {self.step.name}"
        with _traced(name, request, attributes) as current:
            policy = StepPolicy.from_spec(begun.policy) if begun.policy else None
            policy = policy or self.rt.policy(self.step.name)
            outcome = self.attempt(begun, token, request.id, policy)
            verdict = self.record(task, begun, token, outcome)
            self.delivery.act(run_id, verdict, request)
            result = self.end(task, token, outcome, verdict)
            tracing.set_outcome(current, "succeeded")
            return result

    def not_live(self, task: Task, run_id: str, epoch: int, begun: BeginReply) -> NoReturn:
        """This message is not the live one: a duplicate, superseded, or its run ended.

        Without the outbox, a step that completed under this very message, delivered
        again (its worker died before acking it), may have died before sending the next
        step too: the watchdog's look sends it if the run still waits for it.
        """
        engine = self.rt.engine
        done = isinstance(begun, AlreadyDone)
        if done and not engine.holds_messages and _redelivered(task.request):
            self.delivery.act(run_id, self.rt.store.redrive(run_id, "resend", epoch=epoch))
        self.delivery.skipped(task, begun.describe())

    def attempt(
        self, begun: Started, token: AttemptToken, task_id: str, policy: StepPolicy
    ) -> Outcome:
        """The activity, and the step's result as stored. Whatever fails around the
        activity (the run's input does not parse, the output is not JSON, the workflow's
        result function fails) fails the run at once: retrying would fail the same way."""
        rt = self.rt
        try:
            run_input = rt.parse_input(begun.input)
        except Exception as exc:
            return Outcome(error=InvalidInput(f"the run's input: {_first_line(exc)}"))
        context = ActivityContext(
            run_id=token.run_id, input=run_input, task_id=task_id, worker=worker_id(),
            keys=rt.space.run(token.run_id), redis=rt.engine.client, step=self.step.name,
            token=token,
        )  # fmt: skip
        try:
            output = self.step.activity(context)
        except SoftTimeLimitExceeded:
            overrun = StepTimeout(f"attempt exceeded its {policy.time_limit:g}s time limit")
            return Outcome(error=overrun, retryable=policy.retryable(overrun))
        except Exception as exc:
            return Outcome(error=exc, retryable=policy.retryable(exc))
        try:
            result = output if isinstance(output, str) else json.dumps(output)
            return Outcome(result=result, final=self.final(begun, result))
        except Exception as exc:  # the effect happened: the step is undone too
            return Outcome(error=ResultError(_first_line(exc)), refused=False)

    def final(self, begun: Started, result: str) -> str | None:
        """The run's result, if this was its last step."""
        if not begun.last:
            return None
        done = {s.name: begun.results[s.name] for s in self.rt.workflow.activities
                if s.name in begun.results}  # fmt: skip
        done[self.step.name] = result
        final = self.rt.workflow.result(done)
        if not isinstance(final, str):
            raise TypeError(
                f"the workflow's result function returned {type(final).__name__}, not str"
            )
        return final

    def record(
        self, task: Task, begun: Started, token: AttemptToken, outcome: Outcome
    ) -> CompleteReply | RetryReply | FailReply:
        """Record the attempt's outcome: one script. A success goes with the next step's
        message (pushed by the script only if the run moves on to that step)."""
        store, run_id, step = self.rt.store, token.run_id, token.step
        if outcome.error is None:
            assert outcome.result is not None
            nxt = self.rt.next_step(begun.steps, step)
            held = None
            if nxt is not None and outcome.final is None:
                message = self.delivery.step_message(
                    run_id, nxt, token.epoch, begun.summary, begun.limits
                )
                held = self.delivery.hold(message, task.request)
            return store.complete(
                run_id, step, token.epoch, token.attempt, outcome.result, final=outcome.final,
                outbox=held, outbox_step=nxt if held is not None else None,
            )  # fmt: skip
        args = (run_id, step, token.epoch, token.attempt, *describe(outcome.error))
        if outcome.retryable:
            return store.retry(*args)
        return store.fail(*args, refused=outcome.refused)

    def end(
        self, task: Task, token: AttemptToken, outcome: Outcome,
        verdict: CompleteReply | RetryReply | FailReply,
    ) -> str:  # fmt: skip
        """How the task ends, as Celery and Flower should see it: the step's result, a
        retry (its message sent again after the backoff), the error, or skipped."""
        error = outcome.error
        if error is None:
            assert outcome.result is not None
            if isinstance(verdict, NotLive):
                reason = f"result discarded: {verdict.reason}"
                self.delivery.skipped(task, reason, result=outcome.result)
            return outcome.result
        if outcome.retryable:
            if isinstance(verdict, RetryLater):
                self.delivery.retry(task, token.run_id, error, verdict.delay)
            if isinstance(verdict, Ended) and verdict.kind is Kind.FAILED:
                raise error  # attempts exhausted: the task fails with the last error
            self.delivery.skipped(task, f"failure discarded: {verdict.describe()}")
        if isinstance(verdict, NotLive):
            self.delivery.skipped(task, f"failure discarded: {verdict.reason}")
        log.warning("%s %s failed: %s: %s (not retried)", self.rt.workflow.noun, token.run_id,
                    *describe(error))  # fmt: skip
        raise error


def _register_step(rt: WorkflowRuntime, delivery: Delivery, step: Step) -> None:
    policy = rt.policy(step.name)
    name = rt.workflow.task_name(step)
    run = StepTask(rt, delivery, step)

    def body(self: Task, run_id: str, epoch: int = 1) -> str:
        return run(self, run_id, epoch)

    body.__name__ = body.__qualname__ = step.name
    body.__doc__ = step.activity.__doc__
    rt.engine.app.task(
        name=name,
        bind=True,
        shared=False,
        base=EngineTask,
        soft_time_limit=policy.time_limit,
        time_limit=policy.time_limit + rt.settings.hard_time_limit_slack,
    )(body)
    rt.task_registered(name, "step")


# --- gates -------------------------------------------------------------------------------


def _register_gate(rt: WorkflowRuntime, delivery: Delivery, gate: Gate) -> None:
    app = rt.engine.app

    def enter(self: Task, run_id: str, epoch: int = 1) -> str:
        """Enter the gate's wait and start its countdown; the wait ends with a signal."""
        out = rt.store.gate(run_id, gate.name, epoch, self.request.id, worker_id())
        if isinstance(out, Waiting):
            delivery.gate_countdown(run_id, gate.name, epoch, out.remaining)
            return f"Waiting at {gate.name} until {_iso(out.deadline)}"
        if isinstance(out, AlreadyDone):
            return out.result or ""
        delivery.skipped(self, out.describe())

    def timeout(self: Task, run_id: str, epoch: int = 1) -> str:
        """The gate's countdown: fail the run if nobody decided by the deadline."""
        out = rt.store.signal(run_id, gate.name, "timeout", source="countdown task", epoch=epoch)
        if isinstance(out, Early):  # fired before the deadline on Redis's clock: wait the rest
            delivery.gate_countdown(run_id, gate.name, epoch, out.remaining, self.request.id)
            return f"not due yet: {out.remaining:.3f}s left"
        delivery.act(run_id, out)
        if isinstance(out, Ended):
            rt.trace_gate_wait(run_id, gate.name, "timed_out")
            return gate.timeout_message
        return out.describe()

    def traced(self: Task, run_id: str) -> str:
        """Record the span of the wait at the gate, which a signal ended (whoever decided:
        this worker traces, the deciding process need not)."""
        if rt.trace_gate_wait(run_id, gate.name):
            return f"traced the wait at {gate.name}"
        return "not traced (no OpenTelemetry SDK here)"

    for func, name in (
        (enter, rt.workflow.task_name(gate)),
        (timeout, rt.workflow.timeout_task_name(gate)),
    ):
        func.__name__ = func.__qualname__ = name.rsplit(".", 1)[-1]
        app.task(name=name, bind=True, shared=False, base=EngineTask)(func)
        rt.task_registered(name, "step")
    name = rt.workflow.wait_task_name(gate)
    traced.__name__ = traced.__qualname__ = name.rsplit(".", 1)[-1]
    app.task(name=name, bind=True, shared=False, base=EngineTask)(traced)
    rt.task_registered(name, "undo")


# --- compensations -------------------------------------------------------------------------


class UndoTask:
    """Runs one compensation: claim it, undo the step's effect, record it, deliver."""

    def __init__(self, rt: WorkflowRuntime, delivery: Delivery, step: Step, undo: Undo) -> None:
        self.rt = rt
        self.delivery = delivery
        self.step = step
        self.undo = undo

    def __call__(self, task: Task, run_id: str) -> str:
        request = task.request
        claimed = self.rt.store.begin_undo(
            run_id, self.undo.name, self.step.name, request.id, worker_id()
        )
        if not isinstance(claimed, Claimed):
            self.delivery.skipped(task, claimed.describe())
        token = UndoToken(run_id, self.undo.name, claimed.claim)
        attributes = {"run.id": run_id, "workflow": self.rt.workflow.name,
                      "action": self.undo.name, "step": self.step.name, "claim": token.claim,
                      "worker": worker_id()}  # fmt: skip
        name = f"{self.rt.workflow.name}.undo {self.undo.name}"
        with _traced(name, request, attributes) as current:
            outcome, result = self.run(task, claimed, token)
            tracing.set_outcome(current, outcome)
            return result

    def run(self, task: Task, claimed: Claimed, token: UndoToken) -> tuple[str, str]:
        """The compensation itself; (outcome, what the task returns). A failure of any kind
        (the service down, the input unreadable, a reply that is not ``(undone, summary)``)
        is recorded and the undo tried again after its step's backoff: the run stays
        compensating, and shows the failing undo, until it succeeds."""
        rt, run_id, action = self.rt, token.run_id, self.undo.name
        try:
            context = UndoContext(
                run_id=run_id, input=rt.parse_input(claimed.input), task_id=task.request.id,
                worker=worker_id(), keys=rt.space.run(run_id), redis=rt.engine.client,
                action=action, step=self.step.name, token=token,
            )  # fmt: skip
            undone, summary = self.undo.activity(context)
            undone, summary = bool(undone), str(summary)
        except StaleAttempt as exc:
            self.delivery.skipped(task, f"stale: {exc}")
        except Exception as exc:
            failed = rt.store.undo_failed(
                run_id, action, token.claim, self.step.name, *describe(exc)
            )
            if isinstance(failed, RetryLater):
                self.delivery.retry(task, run_id, exc, failed.delay)
            return "failed", failed.describe()
        out = rt.store.undone(run_id, action, token.claim, undone, summary)
        self.delivery.act(run_id, out)
        if not isinstance(out, Undone):
            return "discarded", out.describe()
        return ("done" if undone else "not_needed"), summary


def _register_undo(rt: WorkflowRuntime, delivery: Delivery, step: Step, undo: Undo) -> None:
    policy = rt.policy(step.name)
    run = UndoTask(rt, delivery, step, undo)

    def body(self: Task, run_id: str) -> str:
        return run(self, run_id)

    body.__name__ = body.__qualname__ = undo.name
    body.__doc__ = undo.activity.__doc__
    rt.engine.app.task(
        name=rt.workflow.task_name(undo),
        bind=True,
        shared=False,
        base=EngineTask,
        soft_time_limit=policy.time_limit,
        time_limit=policy.time_limit + rt.settings.hard_time_limit_slack,
    )(body)
    rt.task_registered(rt.workflow.task_name(undo), "undo")


def register_tasks(rt: WorkflowRuntime, delivery: Delivery) -> None:
    """Generate the Celery tasks of ``rt``'s workflow on its engine's app."""
    for element in rt.workflow.steps:
        if isinstance(element, Gate):
            _register_gate(rt, delivery, element)
        else:
            _register_step(rt, delivery, element)
            if element.undo is not None:
                _register_undo(rt, delivery, element, element.undo)


__all__ = ["EngineTask", "Outcome", "StepTask", "UndoTask", "describe", "register_tasks"]

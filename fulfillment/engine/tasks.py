"""The Celery tasks of a registered workflow, generated from its definition.

Every step gets a task (``begin.lua``, the activity, ``complete.lua``), every undo a
task (``begin_undo.lua``, the undo activity, ``undone.lua``), every gate two (one
enters the wait and schedules the timeout, one times it out). Nothing is written
by hand per step. Task names come from the definition (``Step.task_name``) or are
``<workflow prefix>.<step>``.

Retries: the step's policy decides *what* is retried (anything but a
:class:`~fulfillment.engine.errors.NonRetryableError` or a type the policy names)
and ``retry.lua`` *when* (Temporal's backoff, from the run's plan); the sender then
re-sends the task's own message with Celery's retry. Celery's autoretry only covers
the case of Redis being unreachable before an attempt began.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from . import tracing
from .context import ActivityContext, UndoContext
from .definition import Gate, Step, Undo
from .errors import InvalidInput, NonRetryableError, ResultError, StaleAttempt, StepTimeout
from .fencing import AttemptToken, UndoToken
from .identity import worker_id
from .policy import StepPolicy
from .runtime import WorkflowRuntime
from .validation import field_path, one_line, problems
from .verdicts import US, Kind, Verdict

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


# --- steps ------------------------------------------------------------------------------


def run_step(rt: WorkflowRuntime, step: Step, task: Task, run_id: str, epoch: int) -> str:
    """Run one attempt of ``step`` for the run, if this message is the live one."""
    request = task.request
    begun = rt.store.begin(run_id, step.name, epoch, request.id, worker_id())
    if begun.kind is not Kind.RUN:
        request.chain = None
        if begun.kind is Kind.DONE and not rt.engine.holds_messages and _redelivered(request):
            # its worker died before acking it: maybe before sending the next step too
            rt.sender.act(run_id, rt.store.redrive(run_id, "resend", epoch=epoch))
        rt.sender.skipped(task, begun.describe())
    assert begun.attempt is not None
    token = AttemptToken(run_id, step.name, epoch, begun.attempt, begun.round)
    attributes = {"run.id": run_id, "workflow": rt.workflow.name, "step": step.name,
                  "attempt": token.attempt, "epoch": epoch, "worker": worker_id()}  # fmt: skip
    with _traced(f"{rt.workflow.name}.step {step.name}", request, attributes) as current:
        result = _attempt(rt, step, task, begun, token)
        tracing.set_outcome(current, "succeeded")
        return result


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


def _attempt(
    rt: WorkflowRuntime, step: Step, task: Task, begun: Verdict, token: AttemptToken
) -> str:
    """The attempt itself: the activity, then record its result (or its failure).

    Whatever fails around the activity (the run's input does not parse, the output is
    not JSON, the workflow's result function fails) fails the run at once: retrying
    would fail the same way.
    """
    request = task.request
    policy = StepPolicy.from_spec(begun.policy) if begun.policy else rt.policy(step.name)
    try:
        run_input = rt.parse_input(begun.input)
    except Exception as exc:
        _failed(rt, task, token, policy, InvalidInput(f"the run's input: {_first_line(exc)}"))
    context = ActivityContext(
        run_id=token.run_id, input=run_input, task_id=request.id, worker=worker_id(),
        keys=rt.space.run(token.run_id), redis=rt.engine.client, step=step.name, token=token,
    )  # fmt: skip
    try:
        output = step.activity(context)
    except SoftTimeLimitExceeded:
        overrun = StepTimeout(f"attempt exceeded its {policy.time_limit:g}s time limit")
        _failed(rt, task, token, policy, overrun)
    except Exception as exc:
        _failed(rt, task, token, policy, exc)
    try:
        result, final = _results(rt, step, begun, output)
    except Exception as exc:  # the effect happened: the step is undone too
        _failed(rt, task, token, policy, ResultError(_first_line(exc)), refused=False)
    out = _complete(rt, task, begun, token, result, final)
    if out.kind is not Kind.NEXT:
        request.chain = None
    rt.sender.act(token.run_id, out)
    if out.kind is Kind.STALE:
        rt.sender.skipped(task, f"result discarded: {out.reason}", result=result)
    return result


def _first_line(exc: BaseException) -> str:
    """One line saying what ``exc`` is (a pydantic error: every field it names)."""
    if isinstance(exc, ValidationError):
        return one_line("", problems(exc, field_path))
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _results(
    rt: WorkflowRuntime, step: Step, begun: Verdict, output: Any
) -> tuple[str, str | None]:
    """The step's result as stored (text, or the output's JSON), and the run's result if
    this was its last step."""
    result = output if isinstance(output, str) else json.dumps(output)
    if not begun.last:
        return result, None
    done = {s.name: begun.results[s.name] for s in rt.workflow.activities
            if s.name in begun.results}  # fmt: skip
    done[step.name] = result
    final = rt.workflow.result(done)
    if not isinstance(final, str):
        raise TypeError(f"the workflow's result function returned {type(final).__name__}, not str")
    return result, final


def _complete(
    rt: WorkflowRuntime, task: Task, begun: Verdict, token: AttemptToken, result: str,
    final: str | None,
) -> Verdict:  # fmt: skip
    """Record the successful attempt; its next message goes with it (the outbox), or
    Celery's chain sends it after the task returns."""
    request = task.request
    run_id, step = token.run_id, token.step
    if rt.engine.holds_messages:
        box, nxt = rt.sender.hold_next(
            run_id, step, token.epoch, request, begun.summary_dict, begun.plan, begun.limits
        )
        out = rt.store.complete(
            run_id, step, token.epoch, token.attempt, result, final=final, outbox=box,
            outbox_step=nxt,
        )  # fmt: skip
        request.chain = None  # complete.lua sent it, or the run did not move on
        return out
    return rt.store.complete(
        run_id, step, token.epoch, token.attempt, result, final=final,
        outbox_step=rt.sender.next_in_chain(request),
    )  # fmt: skip


def _failed(
    rt: WorkflowRuntime, task: Task, token: AttemptToken, policy: StepPolicy, exc: Exception,
    *, refused: bool = True,
) -> NoReturn:  # fmt: skip
    """Record a failed attempt: the run fails now, or the step is retried after its delay.

    ``refused``: for a failure that is not retried, the step did nothing (see
    :meth:`RunStore.fail`).
    """
    request = task.request
    error_type, message = describe(exc)
    args = (token.run_id, token.step, token.epoch, token.attempt, error_type, message)
    if not policy.retryable(exc):
        request.chain = None
        out = rt.store.fail(*args, refused=refused)
        rt.sender.act(token.run_id, out)
        if out.kind is Kind.STALE:
            rt.sender.skipped(task, f"failure discarded: {out.reason}")
        log.warning("%s %s failed: %s: %s (not retried)", rt.workflow.noun, token.run_id,
                    error_type, message)  # fmt: skip
        raise exc
    out = rt.store.retry(*args)
    if out.kind is Kind.RETRY:
        rt.sender.retry(task, token.run_id, exc, out.delay)
    request.chain = None
    rt.sender.act(token.run_id, out)
    if out.kind is Kind.FAILED:
        raise exc  # attempts exhausted: the task fails with the last error
    rt.sender.skipped(task, f"failure discarded: {out.describe()}")  # stale, or cancelled


def _register_step(rt: WorkflowRuntime, step: Step) -> None:
    policy = rt.policy(step.name)
    name = rt.workflow.task_name(step)

    def body(self: Task, run_id: str, epoch: int = 1) -> str:
        return run_step(rt, step, self, run_id, epoch)

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
    rt.task_registered(name, step.name, "step")


# --- gates -------------------------------------------------------------------------------


def _register_gate(rt: WorkflowRuntime, gate: Gate) -> None:
    app = rt.engine.app

    def enter(self: Task, run_id: str, epoch: int = 1) -> str:
        """Enter the gate's wait and start its countdown; the wait ends with a signal."""
        self.request.chain = None
        out = rt.store.gate(run_id, gate.name, epoch, self.request.id, worker_id())
        if out.kind is Kind.WAITING:
            rt.sender.gate_countdown(run_id, gate.name, epoch, out.remaining)
            return f"Waiting at {gate.name} until {_iso(out.deadline_us)}"
        if out.kind is Kind.DONE:
            return out.result or ""
        rt.sender.skipped(self, out.describe())

    def timeout(self: Task, run_id: str, epoch: int = 1) -> str:
        """The gate's countdown: fail the run if nobody decided by the deadline."""
        out = rt.store.signal(run_id, gate.name, "timeout", source="countdown task", epoch=epoch)
        if out.kind is Kind.EARLY:  # fired before the deadline on Redis's clock: wait the rest
            rt.sender.gate_countdown(run_id, gate.name, epoch, out.remaining, self.request.id)
            return f"not due yet: {out.remaining:.3f}s left"
        rt.sender.act(run_id, out)
        if out.kind is Kind.FAILED:
            rt.trace_gate_wait(run_id, gate.name, "timed_out")
        return gate.timeout_message if out.kind is Kind.FAILED else out.describe()

    for func, name in (
        (enter, rt.workflow.task_name(gate)),
        (timeout, rt.workflow.timeout_task_name(gate)),
    ):
        func.__name__ = func.__qualname__ = name.rsplit(".", 1)[-1]
        app.task(name=name, bind=True, shared=False, base=EngineTask)(func)
    rt.task_registered(rt.workflow.task_name(gate), gate.name, "step")
    rt.task_registered(rt.workflow.timeout_task_name(gate), None, "step")


# --- compensations -------------------------------------------------------------------------


def run_undo(rt: WorkflowRuntime, step: Step, undo: Undo, task: Task, run_id: str) -> str:
    """Claim the compensation, undo the step's effect, record it; a no-op if not claimable."""
    request = task.request
    claimed = rt.store.begin_undo(run_id, undo.name, step.name, request.id, worker_id())
    if claimed.kind is not Kind.RUN:
        rt.sender.skipped(task, claimed.describe())
    assert claimed.claim is not None
    token = UndoToken(run_id, undo.name, claimed.claim)
    attributes = {"run.id": run_id, "workflow": rt.workflow.name, "action": undo.name,
                  "step": step.name, "claim": token.claim, "worker": worker_id()}  # fmt: skip
    with _traced(f"{rt.workflow.name}.undo {undo.name}", request, attributes) as current:
        outcome, result = _undo(rt, step, undo, task, claimed, token)
        tracing.set_outcome(current, outcome)
        return result


def _undo(
    rt: WorkflowRuntime, step: Step, undo: Undo, task: Task, claimed: Verdict, token: UndoToken
) -> tuple[str, str]:
    """The compensation itself; (outcome, what the task returns). A failure of any kind
    (the service down, the input unreadable, a reply that is not ``(undone, summary)``)
    is recorded and the undo tried again after its step's backoff: the run stays
    compensating, and shows the failing undo, until it succeeds."""
    request = task.request
    run_id = token.run_id
    try:
        context = UndoContext(
            run_id=run_id, input=rt.parse_input(claimed.input), task_id=request.id,
            worker=worker_id(), keys=rt.space.run(run_id), redis=rt.engine.client,
            action=undo.name, step=step.name, token=token,
        )  # fmt: skip
        undone, summary = undo.activity(context)
        undone, summary = bool(undone), str(summary)
    except StaleAttempt as exc:
        rt.sender.skipped(task, f"stale: {exc}")
    except Exception as exc:
        failed = rt.store.undo_failed(run_id, undo.name, token.claim, step.name, *describe(exc))
        if failed.kind is Kind.RETRY:
            rt.sender.retry(task, run_id, exc, failed.delay)
        return "failed", failed.describe()
    out = rt.store.undone(run_id, undo.name, token.claim, undone, summary)
    rt.sender.act(run_id, out)
    if out.kind is not Kind.OK:
        return "discarded", out.describe()
    return ("done" if undone else "not_needed"), summary


def _register_undo(rt: WorkflowRuntime, step: Step, undo: Undo) -> None:
    policy = rt.policy(step.name)

    def body(self: Task, run_id: str) -> str:
        return run_undo(rt, step, undo, self, run_id)

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
    rt.task_registered(rt.workflow.task_name(undo), None, "undo")


def register_tasks(rt: WorkflowRuntime) -> None:
    """Generate the Celery tasks of ``rt``'s workflow on its engine's app."""
    for element in rt.workflow.steps:
        if isinstance(element, Gate):
            _register_gate(rt, element)
        else:
            _register_step(rt, element)
            if element.undo is not None:
                _register_undo(rt, element, element.undo)


__all__ = ["EngineTask", "describe", "register_tasks", "run_step", "run_undo"]

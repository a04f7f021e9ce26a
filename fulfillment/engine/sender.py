"""The one sender: every message the engine sends is decided here, from a verdict.

A step's message (and the chain of steps after it, as Celery chains carry it), a
retry, a gate's countdown, a re-drive, a compensation: the client (starting a run,
signals, cancels), the tasks (outbox, retries, gates, compensations) and the
watchdog hand their verdicts to :class:`Sender` and send nothing themselves.

Messages carry only ``(run_id, epoch)``: a worker reads the run from Redis, so no
input (a card number, say) travels through the broker. Their task ids say what they
are (``keys.message_id``), and what Flower shows as their arguments is the run id
and its summary.

Where the broker is the run store's own Redis database, the message that starts a
run and the message of each next step are built here but held back
(:meth:`Sender.hold_first`, :meth:`Sender.hold_next`) and pushed by the transition
script that stores the run or records the step (``create.lua``, ``complete.lua``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Task, chain
from celery.canvas import Signature
from celery.canvas import signature as as_signature
from celery.exceptions import Ignore

from . import tracing
from .definition import Gate
from .keys import message_id
from .transport import Outbox, outbox
from .verdicts import Kind, Verdict

if TYPE_CHECKING:
    from .runtime import WorkflowRuntime

log = logging.getLogger(__name__)


def held(send: Callable[[], object]) -> Outbox:
    """Run ``send`` (which publishes messages) and return its pushes, held back."""
    with outbox() as box:
        send()
    return box


class Sender:
    """Turns verdicts of one workflow's runs into messages."""

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.rt = runtime

    @property
    def app(self) -> Any:
        return self.rt.engine.app

    # --- building ------------------------------------------------------------------------

    def trace_headers(self, run_id: str) -> dict[str, str]:
        """The run's trace context for a message's headers: the current span's (a step
        sending the next), else the one kept in the run record (the watchdog, a signal).
        Nothing when no OpenTelemetry SDK is configured."""
        if not tracing.enabled():
            return {}
        parent: object = tracing.current_traceparent()
        if parent is None:
            parent = self.rt.store.client.hget(self.rt.space.run(run_id).record, tracing.FIELD)
        return tracing.message_headers(parent if isinstance(parent, str) else None)

    def _display(self, run_id: str, epoch: int, summary: dict[str, Any]) -> dict[str, str]:
        """What Flower and logs show as the task's arguments: the run id and its summary."""
        return {"argsrepr": repr((run_id,)), "kwargsrepr": repr({"epoch": epoch, **summary})}

    def time_limits(self, step: str, limits: Mapping[str, float] | None) -> dict[str, float]:
        """The soft and hard time limits of a message running ``step`` (or its undo), for
        a run with its own ``limits``: an overrun is a retryable failure; the hard limit
        kills the pool process ``hard_time_limit_slack`` later."""
        limit = self.rt.time_limit(step, limits)
        return {
            "soft_time_limit": limit,
            "time_limit": limit + self.rt.settings.hard_time_limit_slack,
        }

    def signature(
        self,
        step: str,
        run_id: str,
        epoch: int,
        summary: dict[str, Any],
        headers: dict[str, str] | None = None,
        limits: Mapping[str, float] | None = None,
    ) -> Signature:
        """The immutable signature of one step's (or gate's) message.

        ``ignore_result``: nobody waits on Celery results here (the run record is the
        result), and a client that sends tasks by name would otherwise subscribe to
        each task's result channel. ``task_id``: :func:`~fulfillment.engine.keys.message_id`
        of the step and epoch, which the watchdog looks for in the workers' heartbeats.
        """
        element = self.rt.workflow.element(step)
        options = {} if isinstance(element, Gate) else self.time_limits(step, limits)
        return self.app.signature(
            self.rt.workflow.task_name(element),
            args=(run_id,),
            kwargs={"epoch": epoch},
            immutable=True,
            queue=self.rt.queue,
            ignore_result=True,
            task_id=message_id(run_id, step, epoch),
            headers=self.trace_headers(run_id) if headers is None else headers,
            **options,
            **self._display(run_id, epoch, summary),
        )

    def _chain(
        self,
        step: str,
        run_id: str,
        epoch: int,
        summary: dict[str, Any],
        plan: Sequence[str],
        limits: Mapping[str, float] | None,
    ) -> Signature:
        steps = self.rt.workflow.chain_from(step, plan or None)
        headers = self.trace_headers(run_id)  # once for the whole chain
        sigs = [self.signature(s, run_id, epoch, summary, headers, limits) for s in steps]
        return sigs[0] if len(sigs) == 1 else chain(*sigs)

    # --- steps ---------------------------------------------------------------------------

    def dispatch(
        self,
        run_id: str,
        step: str,
        epoch: int,
        summary: dict[str, Any],
        plan: Sequence[str] = (),
        countdown: float = 0,
        limits: Mapping[str, float] | None = None,
    ) -> None:
        """Send the chain that runs the run from ``step`` on (``limits``: the run's own
        time limits)."""
        options = {"countdown": countdown} if countdown > 0 else {}
        self._chain(step, run_id, epoch, summary, plan, limits).apply_async(**options)

    def hold_first(
        self,
        run_id: str,
        step: str,
        summary: dict[str, Any],
        plan: Sequence[str],
        limits: Mapping[str, float] | None = None,
    ) -> Outbox:
        """The first message of a new run, held for ``create.lua`` to push."""
        return held(lambda: self.dispatch(run_id, step, 1, summary, plan, limits=limits))

    def hold_next(
        self, run_id: str, step: str, epoch: int, request: Any, summary: dict[str, Any],
        plan: Sequence[str], limits: Mapping[str, float] | None = None,
    ) -> tuple[Outbox, str | None]:  # fmt: skip
        """The next message after ``step`` completes, held for ``complete.lua``.

        The running task's chain goes on as Celery's tracer would send it (same
        ``parent_id`` and ``root_id``); at the end of a chain (a gate next), the
        next step's chain is built afresh. Returns the pushes and the step they start.
        """
        if request.chain:
            nxt = self.rt.step_of_task(request.chain[-1]["task"])
            return held(lambda: self.continue_chain(request)), nxt
        names = list(plan)
        if step not in names or names.index(step) + 1 >= len(names):
            return [], None
        nxt = names[names.index(step) + 1]
        return held(lambda: self.dispatch(run_id, nxt, epoch, summary, plan, limits=limits)), nxt

    def next_in_chain(self, request: Any) -> str | None:
        """The step Celery's chain sends after the running task, if any."""
        return self.rt.step_of_task(request.chain[-1]["task"]) if request.chain else None

    def continue_chain(self, request: Any) -> None:
        """Send the next task of the running task's chain, as Celery's tracer does on success."""
        remaining = request.chain
        priority = None
        if self.app.conf.task_inherit_parent_priority:
            priority = (request.delivery_info or {}).get("priority")
        as_signature(remaining[-1], app=self.app).apply_async(
            chain=remaining[:-1], parent_id=request.id, root_id=request.root_id, priority=priority
        )

    def retry(self, task: Task, run_id: str, exc: BaseException | None, delay: float) -> NoReturn:
        """Send the running task's message again after ``delay`` (Celery's own retry: same
        task id, its headers, its retry count up, ``task-retried`` for Flower), with the
        current span as its trace parent. Raises ``Retry``."""
        trace = self.trace_headers(run_id)
        options = {"headers": {**(task.request.headers or {}), **trace}} if trace else {}
        raise task.retry(exc=exc, countdown=delay, max_retries=None, throw=False, **options)

    def gate_countdown(
        self, run_id: str, gate: str, epoch: int, seconds: float, task_id: str | None = None
    ) -> None:
        """The gate's timeout message, due when its wait ends."""
        element = self.rt.workflow.element(gate)
        assert isinstance(element, Gate)
        self.app.signature(
            self.rt.workflow.timeout_task_name(element),
            args=(run_id,),
            kwargs={"epoch": epoch},
            queue=self.rt.queue,
            immutable=True,
            ignore_result=True,
            task_id=task_id or message_id(run_id, f"{gate}_timeout", epoch),
            headers=self.trace_headers(run_id),
        ).apply_async(countdown=max(seconds, 0))

    # --- compensations ---------------------------------------------------------------------

    def undo(
        self,
        run_id: str,
        send: Sequence[tuple[str, int]],
        limits: Mapping[str, float] | None = None,
    ) -> None:
        """One message per compensation to start, each with its own message id and its
        step's time limit (the run's own, in ``limits``)."""
        for action, number in send:
            step, undo = self.rt.workflow.undo(action)
            self.app.signature(
                self.rt.workflow.task_name(undo),
                args=(run_id,),
                queue=self.rt.queue,
                immutable=True,
                ignore_result=True,
                task_id=message_id(run_id, action, number),
                headers=self.trace_headers(run_id),
                **self.time_limits(step.name, limits),
            ).apply_async()

    # --- what Flower shows of messages that did nothing ---------------------------------

    def skipped(self, task: Task, why: str, **fields: Any) -> NoReturn:
        """End a task whose message is not the live one (a duplicate, superseded, for a
        finished run) or whose result was discarded: Flower shows it ``SKIPPED`` with
        the reason, not as the step's success. Raises ``Ignore``."""
        try:
            task.send_event("task-skipped", reason=why, **fields)
        except Exception:  # only what Flower shows: never fail the task for it
            log.debug("task-skipped event not sent", exc_info=True)
        log.info("%s[%s] %s", task.name, task.request.id, why)
        raise Ignore()

    def lost(self, task_id: str, reason: str) -> None:
        """Tell Flower that the attempt run by message ``task_id`` was presumed lost, so
        it does not stay ``STARTED`` forever (state ``LOST``, with the reason)."""
        try:
            with self.app.events.default_dispatcher() as dispatcher:
                dispatcher.send("task-lost", uuid=task_id, reason=reason)
        except Exception:
            log.debug("task-lost event not sent", exc_info=True)

    # --- verdicts --------------------------------------------------------------------------

    def act(self, run_id: str, verdict: Verdict) -> None:
        """Send what a transition's verdict asks for.

        The transition is recorded already: a message that cannot be published (the
        broker out of reach) is recorded as unsent, and the watchdog sends it at its next
        look; the caller goes on.
        """
        if verdict.lost_task:
            self.lost(verdict.lost_task, verdict.reason or "presumed lost")
        if verdict.kind is Kind.DISPATCH or (verdict.kind is Kind.NEXT and verdict.dispatch):
            assert verdict.step is not None and verdict.epoch is not None
            step, epoch = verdict.step, verdict.epoch
            self.or_unsent(
                run_id,
                [message_id(run_id, step, epoch)],
                lambda: self.dispatch(
                    run_id,
                    step,
                    epoch,
                    verdict.summary_dict,
                    verdict.plan,
                    countdown=verdict.countdown,
                    limits=verdict.limits,
                ),
            )
        if verdict.send:
            self.or_unsent(
                run_id,
                [message_id(run_id, action, n) for action, n in verdict.send],
                lambda: self.undo(run_id, verdict.send, verdict.limits),
            )

    def or_unsent(self, run_id: str, messages: list[str], send: Callable[[], object]) -> None:
        """``send()``; if the broker cannot take it, record ``messages`` as unsent (the
        watchdog sends them). Raises only if even that cannot be recorded."""
        try:
            send()
        except Exception as exc:
            self.rt.store.unsent(run_id, messages)
            log.warning("%s %s: could not send %s (%s); the watchdog sends it",
                        self.rt.workflow.noun, run_id, ", ".join(messages), exc)  # fmt: skip

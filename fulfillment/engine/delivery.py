"""Delivery: every message the engine sends is built here and leaves from here.

There are two ways out, one per kind of broker:

* the broker is the run store's own Redis: a message that starts a run or its next
  step is built *before* the transition script and handed to it (:meth:`Delivery.hold`);
  the script pushes it in the same atomic step that records the transition (the
  transactional outbox, ``lua/lib.lua``), or drops it when the run did not move there;
* any other broker (RabbitMQ): the script records the transition and says in its reply
  what to send; :meth:`Delivery.act` publishes it right after. If the broker cannot
  take it, the message is recorded as unsent and the watchdog sends it at its next
  look (within the bound the durability guide states).

Whatever a script decides that no message could be built for in advance (a
compensation, a gate's countdown, a re-drive, a retry after its backoff) is sent by
:meth:`Delivery.act` or :meth:`Delivery.retry` after the script, on either broker.

Messages carry only ``(run_id, epoch)``: a worker reads the run from Redis, so no
input (a card number, say) travels through the broker. Each message runs one step; its
task id says what it is (:func:`~fulfillment.engine.keys.message_id`), and what Flower
shows as its arguments is the run id and its summary. A step's message names the
message that sent it as its parent, and the run's first message as its root, so Flower
shows a run's steps as one tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore

from . import tracing
from .definition import Gate
from .keys import message_id
from .replies import Dispatch, Moved, Reply, Send, Sends
from .runtime import WorkflowRuntime
from .transport import Outbox, outbox

log = logging.getLogger(__name__)


#: the longest a message's shown arguments get (Flower, logs)
SHOWN_LIMIT = 2000


def shown(text: str) -> str:
    """``text`` as a message's shown arguments: cut at ``SHOWN_LIMIT`` characters."""
    return text if len(text) <= SHOWN_LIMIT else text[: SHOWN_LIMIT - 3] + "..."


class Delivery:
    """Builds and sends the messages of one workflow's runs."""

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.rt = runtime
        self.app = runtime.engine.app

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

    def time_limits(self, step: str, limits: Mapping[str, float] | None) -> dict[str, float]:
        """The soft and hard time limits of a message running ``step`` (or its undo), for
        a run with its own ``limits``: an overrun is a retryable failure; the hard limit
        kills the pool process ``hard_time_limit_slack`` later."""
        limit = self.rt.time_limit(step, limits)
        return {
            "soft_time_limit": limit,
            "time_limit": limit + self.rt.settings.hard_time_limit_slack,
        }

    def step_message(
        self,
        run_id: str,
        step: str,
        epoch: int,
        summary: Mapping[str, Any],
        limits: Mapping[str, float] | None = None,
    ) -> Signature:
        """The message that runs ``step`` (a step, or a gate's wait) of the run under ``epoch``.

        ``ignore_result``: nobody waits on Celery results (the run record is the result).
        ``task_id``: :func:`~fulfillment.engine.keys.message_id` of the step and epoch,
        which the watchdog looks for in the workers' heartbeats.
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
            headers=self.trace_headers(run_id),
            argsrepr=repr((run_id,)),
            kwargsrepr=shown(repr({"epoch": epoch, **summary})),
            **options,
        )

    # --- the outbox ------------------------------------------------------------------

    def hold(self, message: Signature, parent: Any = None) -> Outbox | None:
        """``message`` built for a transition script to push (the outbox), or None where
        the broker is not the store's Redis (the reply then says to send it).

        ``parent``: the request of the task sending it (its id becomes the parent id,
        its root id the root id).
        """
        if not self.rt.engine.holds_messages:
            return None
        with outbox() as box:
            self._publish(message, parent)
        return box

    def _publish(self, message: Signature, parent: Any = None, countdown: float = 0) -> None:
        options: dict[str, Any] = {"countdown": countdown} if countdown > 0 else {}
        if parent is not None:
            options.update(parent_id=parent.id, root_id=parent.root_id or parent.id)
        message.apply_async(**options)

    # --- acting on a transition's verdict -------------------------------------------

    def act(self, run_id: str, reply: Reply, parent: Any = None) -> None:
        """Send what a transition's ``reply`` asks for that its script did not push
        already: a step's message (:class:`~fulfillment.engine.replies.Dispatch`, or a
        :class:`~fulfillment.engine.replies.Moved` to ``dispatch``), compensations
        (``send``), and tell Flower of an attempt presumed lost.

        The transition is recorded already: a message that cannot be published (the
        broker out of reach) is recorded as unsent, and the watchdog sends it at its next
        look; the caller goes on.
        """
        if reply.lost_task:
            self.lost(reply.lost_task, reply.reason or "presumed lost")
        if isinstance(reply, Dispatch) or (isinstance(reply, Moved) and reply.dispatch):
            assert reply.epoch is not None
            step, epoch = reply.step, reply.epoch
            countdown = reply.countdown if isinstance(reply, Dispatch) else 0.0
            message = self.step_message(run_id, step, epoch, reply.summary, reply.limits)
            self.or_unsent(
                run_id,
                [message_id(run_id, step, epoch)],
                lambda: self._publish(message, parent, countdown),
            )
        if isinstance(reply, Sends) and reply.send:
            send = reply
            self.or_unsent(
                run_id,
                [message_id(run_id, s.action, s.n) for s in send.send],
                lambda: self.undo(run_id, send.send, send.limits),
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

    def retry(self, task: Task, run_id: str, exc: BaseException | None, delay: float) -> NoReturn:
        """Send the running task's message again after ``delay`` (Celery's own retry: same
        task id, its headers, its retry count up, ``task-retried`` for Flower), with the
        current span as its trace parent. Raises ``Retry``."""
        trace = self.trace_headers(run_id)
        options = {"headers": {**(task.request.headers or {}), **trace}} if trace else {}
        raise task.retry(exc=exc, countdown=delay, max_retries=None, throw=False, **options)

    def _message(self, task: str, run_id: str, task_id: str, **options: Any) -> Signature:
        """A message of the run to ``task`` (its only argument the run id, unless
        ``options`` give kwargs), on the workflow's queue, in the run's trace."""
        return self.app.signature(
            task, args=(run_id,), queue=self.rt.queue, immutable=True, ignore_result=True,
            task_id=task_id, headers=self.trace_headers(run_id), **options,
        )  # fmt: skip

    def _gate(self, gate: str) -> Gate:
        element = self.rt.workflow.element(gate)
        assert isinstance(element, Gate)
        return element

    def gate_countdown(
        self, run_id: str, gate: str, epoch: int, seconds: float, task_id: str | None = None
    ) -> None:
        """The gate's timeout message, due when its wait ends."""
        task = self.rt.workflow.timeout_task_name(self._gate(gate))
        task_id = task_id or message_id(run_id, f"{gate}_timeout", epoch)
        message = self._message(task, run_id, task_id, kwargs={"epoch": epoch})
        message.apply_async(countdown=max(seconds, 0))

    def trace_gate(self, run_id: str, gate: str) -> None:
        """Ask a worker to record the span of the wait at ``gate`` a signal just ended (a
        worker traces; the deciding process need not). Best effort: only the trace would
        miss it."""
        task = self.rt.workflow.wait_task_name(self._gate(gate))
        try:
            self._message(task, run_id, message_id(run_id, f"{gate}_wait", 1)).apply_async()
        except Exception:
            log.debug("the wait at %s of %s is not traced", gate, run_id, exc_info=True)

    def undo(
        self, run_id: str, send: list[Send], limits: Mapping[str, float] | None = None
    ) -> None:
        """One message per compensation to start, each with its own message id and its
        step's time limit (the run's own, in ``limits``)."""
        for one in send:
            step, undo = self.rt.workflow.undo(one.action)
            task_id = message_id(run_id, one.action, one.n)
            limits_of = self.time_limits(step.name, limits)
            self._message(
                self.rt.workflow.task_name(undo), run_id, task_id, **limits_of
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


__all__ = ["Delivery"]

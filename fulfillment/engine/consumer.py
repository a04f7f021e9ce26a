"""The worker's consumer: Celery's, refusing any message that would kill it.

Celery's consumer hands every task message to the task's strategy; a message whose
body is not ``[args, kwargs, embed]``, whose time limits are not numbers, or whose
headers have the wrong types raises there, out of the event loop, and the worker exits
(``Unrecoverable error``); the message comes back and kills the next worker. This
consumer (``worker_consumer``, set by :func:`fulfillment.engine.config.build`) checks
each message first (:func:`fulfillment.engine.intake.task_problem`), and also replaces
Celery's handling of unknown tasks, invalid and undecodable messages: each is refused
with one WARNING line, kept in the dead letters and acknowledged. Whatever else a
message makes the strategy raise is refused the same way. It works the same on every
broker.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from typing import Any

from amqp.exceptions import ResourceLocked
from celery.worker.consumer import Consumer as CeleryConsumer
from vine import promise

from .config import is_amqp
from .deadletter import DeadLetters, mask
from .identity import worker_id
from .intake import TaskShape, task_problem
from .runtime import Engine
from .transport import on_refused

log = logging.getLogger(__name__)


def keep_refused_payloads(engine: Engine) -> None:
    """Make the Redis channels keep what they refuse as dead letters of ``engine``."""
    dead = DeadLetters(engine.client, engine.settings.dead_letter_limit, engine.keys)

    def refused(reason: str, raw: bytes | str, queue: str) -> None:
        kept = dead.add(reason, raw, source="transport", queue=queue, worker=worker_id())
        where = f"dead letter {kept}" if kept else "not kept: Redis did not answer"
        log.warning("refused a payload from queue %s: %s [%s]", queue, mask(reason), where)

    on_refused(refused)


def _payload(message: Any) -> str:
    """What is kept of a refused message: its headers, properties and body, as JSON."""
    body = message.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return json.dumps(
        {
            "headers": message.headers,
            "properties": message.properties,
            "content-type": message.content_type,
            "body": body,
        },
        default=str,
    )


class Consumer(CeleryConsumer):
    """Celery's consumer, with every task message checked before its strategy runs.

    A queue locked by the worker's own previous connection (``RESOURCE_LOCKED``: after a
    network blip the broker may not have dropped it yet) counts as a lost connection:
    the consumer reconnects with Celery's backoff until the broker lets go, instead of
    exiting with an unrecoverable error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if is_amqp(str(self.app.conf.broker_url)):
            recoverable: tuple[Any, ...] = tuple(getattr(self, "connection_errors", ()))
            self.connection_errors = (*recoverable, ResourceLocked)

    @cached_property
    def _engine(self) -> Engine:
        return Engine.of(self.app)

    @cached_property
    def _shapes(self) -> dict[str, TaskShape]:
        return self._engine.task_shapes()

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(
            self._engine.client, self._engine.settings.dead_letter_limit, self._engine.keys
        )

    def refuse(self, message: Any, reason: str) -> None:
        """Refuse ``message``: keep it as a dead letter, say so in one line, acknowledge it."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        task, task_id = headers.get("task"), headers.get("id")
        task = task if isinstance(task, str) else None
        task_id = task_id if isinstance(task_id, str) else None
        queue = (message.delivery_info or {}).get("routing_key")
        kept = self.dead_letters.add(
            reason, _payload(message), source="consumer", task=task, task_id=task_id,
            queue=queue, worker=worker_id(),
        )  # fmt: skip
        where = f"dead letter {kept}" if kept else "not kept: Redis did not answer"
        what = f"task {task!r} ({str(task_id)[:80]})" if task else "a message"
        log.warning("refused %s from queue %s: %s [%s]", what, queue, mask(reason), where)
        if not message.acknowledged:
            message.ack_log_error(log, self.connection_errors)

    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)
        shapes = self._shapes

        def on_task_received(message: Any) -> Any:
            problem = task_problem(message, shapes)
            if problem:
                return self.refuse(message, problem)
            try:
                return handle(message)
            except Exception as exc:  # a message Celery cannot take must not stop the worker
                return self.refuse(message, f"{type(exc).__name__}: {exc}")

        return on_task_received

    # Celery's own refusals: one line each, a dead letter, no traceback, no result
    # written for a task that is not there.

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.refuse(message, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        self.refuse(message, f"unknown task {str(name)[:100]!r}: no worker of this app runs it")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self.refuse(message, f"invalid task message: {exc}")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self.refuse(message, f"cannot decode the message: {exc}")


__all__ = ["Consumer", "keep_refused_payloads"]

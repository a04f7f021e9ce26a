"""The order app, in a worker that dies once between recording a step and sending the
next step's message: ``celery -A tests.dying_app worker``.

The pool process running the step whose next message has the task id in
``DIE_BEFORE_SENDING`` exits at that publish (once: ``DIE_MARKER`` records it), as a
process killed at that moment would. Without the outbox (RabbitMQ as the broker) the
next message follows the script that recorded the step, so this is the window the
engine must close.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kombu import Producer

from fulfillment import app

_publish = Producer.publish


def _dying_publish(self: Producer, body: Any, *args: Any, **kwargs: Any) -> Any:
    target = os.environ.get("DIE_BEFORE_SENDING")
    marker = Path(os.environ.get("DIE_MARKER", "/nonexistent/marker"))
    if target and (kwargs.get("headers") or {}).get("id") == target and not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return _publish(self, body, *args, **kwargs)


Producer.publish = _dying_publish  # type: ignore[method-assign]

__all__ = ["app"]

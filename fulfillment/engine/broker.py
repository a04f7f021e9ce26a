"""A worker's first look at its broker (RabbitMQ), before it starts consuming.

Once a worker has connected, a broker outage is ridden out: Celery reconnects forever,
and a restart of the broker pauses the workers instead of killing them. Before the
first connection, though, a broker that never answers is more likely a wrong address
than an outage, and a refused login or a missing vhost never heals by retrying: Celery
would log the same refusal several times a second, for ever, while orders wait. So a
worker checks first (:func:`check_broker`):

* the broker does not answer: one WARNING line per try, the waits growing (1, 2, 4, ...
  up to 16 s), and after ``FULFILLMENT_BROKER_START_TIMEOUT`` seconds one line saying
  so and the worker exits with code 1;
* the login or the vhost is refused: one line naming the fix, exit code 1 at once;
* the queue exists with other arguments than the deployment's (``FULFILLMENT_QUEUE_TYPE``
  changed on a vhost used before: ``PRECONDITION_FAILED``): one line naming the fix,
  exit code 1.

Redis as the broker needs none of this: the store's client already says when Redis
is out of reach.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from amqp.exceptions import AccessRefused, NotAllowed, PreconditionFailed
from celery import Celery

from .config import is_amqp
from .connection import redact
from .settings import EngineSettings

log = logging.getLogger(__name__)

#: the longest wait between two tries
LONGEST_WAIT = 16.0


class BrokerRefused(SystemExit):
    """The worker cannot start on this broker; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _vhost_of(url: str) -> str:
    path = url.split("://", 1)[-1].split("/", 1)
    return path[1].split("?", 1)[0] if len(path) > 1 and path[1] else "/"


def check_broker(app: Celery, settings: EngineSettings) -> None:
    """Connect to the app's RabbitMQ and declare the worker's queue once, or raise
    :class:`BrokerRefused` with one line saying what is wrong (see the module)."""
    url = str(app.conf.broker_url)
    if not is_amqp(url):
        return
    shown, prefix = redact(url), settings.env_prefix()
    deadline = time.monotonic() + settings.broker_start_timeout
    wait = 1.0
    while True:
        try:
            with app.connection_for_write() as conn:
                conn.connect()
                _declare(app, conn)
            return
        except (AccessRefused, NotAllowed) as exc:
            vhost = _vhost_of(url)
            raise BrokerRefused(
                f"RabbitMQ at {shown} refuses the login: {_first_line(exc)} (check the user "
                f"and password in {prefix}BROKER_URL; a vhost must exist first: rabbitmqctl "
                f"add_vhost {vhost} && rabbitmqctl set_permissions -p {vhost} USER "
                "'.*' '.*' '.*')"
            ) from None
        except PreconditionFailed as exc:
            raise BrokerRefused(
                f"RabbitMQ at {shown} has the queue {settings.queue!r} with other arguments "
                f"({_first_line(exc)}): it was declared with another {prefix}QUEUE_TYPE. Use "
                f"a new vhost, set {prefix}QUEUE_TYPE back, or delete the queue and exchange "
                f"once it is drained (rabbitmqctl delete_queue {settings.queue})"
            ) from None
        except Exception as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerRefused(
                    f"RabbitMQ at {shown} does not answer ({_first_line(exc)}); gave up after "
                    f"{settings.broker_start_timeout:g} s ({prefix}BROKER_START_TIMEOUT)"
                ) from None
            wait = min(wait, left)
            log.warning("RabbitMQ at %s does not answer (%s); trying again in %g s",
                        shown, _first_line(exc), wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT)


def _declare(app: Celery, conn: Any) -> None:
    """Declare the queues the worker consumes, as it will (a mismatch raises here)."""
    channel = conn.default_channel
    for queue in app.amqp.queues.values():
        queue.bind(channel).declare()


__all__ = ["BrokerRefused", "check_broker"]

"""The Celery configuration the engine runs with, every delivery setting chosen on purpose.

Why each (the Celery and kombu facts behind them are in ``docs/celery-facts.md``):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged
  only after its task ran; if the pool process running it dies, the message goes
  back to the queue at once and the next delivery takes over the attempt
  (``begin.lua`` sees its own task id still holding the lease).
* ``worker_prefetch_multiplier = 1``: a worker holds no more messages than it can
  run, so a worker that dies takes few messages with it (the watchdog sends their
  steps again), and a batch spreads over all workers.
* ``ack_emulation`` off (the Redis broker): kombu's Redis transport would keep every
  delivered message in an "unacked" hash until it is acknowledged (two MULTI/EXEC
  round trips per message) and hand it out again after ``visibility_timeout`` (an
  hour). The engine does not need it: a worker reports the messages it holds in its
  heartbeat, and when it dies the watchdog sends the steps of those messages again
  (and a lost message is noticed by its run's schedule in any case), within seconds,
  each under a new epoch so a late copy is stale. A pool process that dies hands its
  message back (``task_reject_on_worker_lost``), and a warm shutdown returns the
  messages a worker still holds, as before. Without the emulation no message is ever
  delivered twice by the transport, and each step costs six round trips less.
* JSON only: ``accept_content`` refuses pickle (or anything else) at the door.
* Worker task events on (``worker_send_task_events``): Flower is the dashboard and
  needs received / started / retried / succeeded / failed. The producer's
  ``task-sent`` event is off by default (``FULFILLMENT_TASK_SENT_EVENTS=1`` turns it
  on): it repeats what task-received carries a moment later, and it is one more
  publish on every step's hot path. Tasks ignore results: the run record in Redis
  is the source of truth, Flower gets results from the task-succeeded event, and
  nobody reads the result backend.
* ``broker_transport``: kombu's Redis transport, except that a channel reuses one
  redis-py client instead of building one per command, and holds messages for the
  outbox (:mod:`fulfillment.engine.transport`).
* ``worker_consumer``: Celery's consumer, checking every message before Celery acts on
  it (:mod:`fulfillment.engine.consumer`): one that would raise in Celery's strategy
  (a body that is not ``[args, kwargs, embed]``, time limits that are not numbers),
  an unknown task or bad arguments for an engine task is refused with one line and
  kept as a dead letter, instead of killing the worker and every worker after it.
* Reconnect forever (``broker_connection_max_retries = None``) and retry
  publishing, so a Redis restart pauses the workers instead of killing them.
* RabbitMQ as broker (``FULFILLMENT_BROKER_URL=amqp://...``): publisher confirms
  (``confirm_publish``: a publish returns once the broker has the message), heartbeats
  every ``FULFILLMENT_BROKER_HEARTBEAT`` seconds, a worker mailbox that a lingering old
  connection cannot lock the reconnected worker out of, the Redis-only transport
  options left out, and with ``FULFILLMENT_QUEUE_TYPE=quorum``
  a quorum queue on a topic exchange, so that countdowns (retries, a gate's
  timeout) use Celery's native delayed delivery instead of being held by a worker.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from .connection import resolve_broker_url, resolve_redis_url
from .settings import EngineSettings
from .transport import transport_for


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp")


def amqp_settings(settings: EngineSettings) -> dict[str, Any]:
    """What RabbitMQ as the broker needs instead of the Redis transport's options."""
    conf: dict[str, Any] = {
        "broker_transport_options": {"confirm_publish": True},
        # a dead or half-open connection is noticed within about two heartbeats, by the
        # broker too (it then hands the connection's unacknowledged messages on)
        "broker_heartbeat": settings.broker_heartbeat,
        # A worker's mailbox (remote control) is not exclusive to its connection: after
        # a network blip the broker may still hold the old connection, and an exclusive
        # queue would refuse the reconnected worker (RESOURCE_LOCKED) until it lets go.
        "control_queue_exclusive": False,
    }
    if settings.queue_type == "quorum":
        exchange = Exchange(settings.queue, type="topic")
        conf.update(
            task_queues=[
                Queue(
                    settings.queue,
                    exchange,
                    routing_key=settings.queue,
                    queue_arguments={"x-queue-type": "quorum"},
                )
            ],
            task_default_exchange=settings.queue,
            task_default_exchange_type="topic",
            task_default_routing_key=settings.queue,
            worker_detect_quorum_queues=True,
        )
    return conf


def build(settings: EngineSettings) -> dict[str, Any]:
    """The Celery configuration for ``settings``."""
    broker_url = resolve_broker_url(settings)
    conf = _build(settings, broker_url)
    if is_amqp(broker_url):
        conf.update(amqp_settings(settings))
    return conf


def _build(settings: EngineSettings, broker_url: str) -> dict[str, Any]:
    return {
        # --- where --------------------------------------------------------------
        "broker_url": broker_url,
        "broker_transport": transport_for(broker_url),
        # nobody reads Celery's results (the run record is the result); a cluster has none
        "result_backend": None if settings.is_cluster else resolve_redis_url(settings),
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        # --- delivery ------------------------------------------------------------
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            # the engine covers a dead worker's messages (see above); nothing to emulate
            "ack_emulation": False,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
            "retry_on_timeout": True,
            # only read for sentinel:// URLs: which master the sentinels watch
            "master_name": settings.sentinel_master,
        },
        "result_backend_transport_options": {"master_name": settings.sentinel_master},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 60,
            "interval_start": 0,
            "interval_step": 0.25,
            "interval_max": 1,
        },
        # --- serialization: JSON only, never pickle --------------------------------
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # --- results: the run record is the source of truth --------------------------
        "task_ignore_result": True,
        "result_expires": 3600,
        # --- monitoring (Flower) ------------------------------------------------------
        "worker_send_task_events": True,
        "task_send_sent_event": settings.task_sent_events,
        "worker_enable_remote_control": True,
        # --- a worker never dies of a message (intake.py, consumer.py) ----------------------
        "worker_consumer": "fulfillment.engine.consumer:Consumer",
        # --- misc --------------------------------------------------------------------------
        "enable_utc": True,
        "timezone": "UTC",
        "worker_redirect_stdouts_level": "INFO",
    }

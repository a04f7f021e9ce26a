"""The baseline: a raw Celery chain of three no-op tasks, with our delivery settings.

Same broker, same worker flags (prefork, acks_late, prefetch 1, JSON only, no
result backend, task events on as Flower needs them; ``BENCH_RAW_EVENTS=0``
gives Celery's default of no events, reported as a second baseline). The last
task pushes the chain's id to the list named in its arguments, which is how the
benchmark learns that a chain finished (one Redis command: the least any
completion signal can cost). Every run and every warm-up names its own list, so
a completion left over from an earlier run can never be counted again.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

URL = os.environ.get("BENCH_RAW_URL", "redis://127.0.0.1:6379/15")
#: the broker, if not the Redis of URL (which keeps the completion lists either way)
BROKER = os.environ.get("BENCH_RAW_BROKER") or URL
QUEUE = "raw"

app = Celery("bench.raw_app", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=os.environ.get("BENCH_RAW_EVENTS") == "1",
)
if BROKER.startswith("amqp"):  # our delivery settings on RabbitMQ: publisher confirms
    app.conf.broker_transport_options = {"confirm_publish": True}
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(URL)
    return _client


@app.task(name="raw.step")
def step(chain_id: str) -> str:
    return chain_id


@app.task(name="raw.last")
def last(chain_id: str, done_key: str) -> None:
    _redis().rpush(done_key, chain_id)

"""A worker never dies of a message, on either broker.

Each poison message below, sent to a real worker's queue, used to kill the worker
that took it (``Unrecoverable error``), and its redelivery killed every restarted
worker in turn. Now each is refused with one WARNING line, kept as a dead letter
(``fulfillment dead-letters``) and acknowledged: the worker carries on (the same
process), a real order placed after them completes, the queue drains, and a
restarted worker finds none of them again.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fulfillment.engine.keys import SharedKeys

from .rabbit import broker_env
from .support import Deployment, Worker, order_doc, wait_until

GOOD_HEADERS = {"lang": "py", "task": "fulfillment.process_payment", "retries": 0,
                "timelimit": [None, None], "argsrepr": "", "kwargsrepr": ""}  # fmt: skip


def _envelope(body: str, **properties: Any) -> str:
    """A Redis transport payload around ``body`` (base64), as kombu writes one."""
    info = {"exchange": "", "routing_key": "fulfillment"}
    props = {"delivery_tag": uuid.uuid4().hex, "body_encoding": "base64", "delivery_info": info,
             **properties}  # fmt: skip
    return json.dumps({"body": body, "content-encoding": "utf-8",
                       "content-type": "application/json",
                       "headers": {**GOOD_HEADERS, "id": uuid.uuid4().hex},
                       "properties": props})  # fmt: skip


#: raw payloads on the Redis broker: kombu's consumer loop died of each (name -> payload)
RAW = {
    "not JSON": "this is not json",
    "empty": "",
    "a JSON array": "[1, 2, 3]",
    "a body that is not base64": _envelope("%%%not-base64%%%"),
    "no delivery tag": json.dumps({"body": "", "properties": {}}),
}


def _publish(d: Deployment, body: str, headers: dict[str, Any], content_type: str) -> None:
    """A task message with exactly this body and these headers, on the deployment's broker."""
    app = d.client.app
    queue = d.settings.queue
    with app.producer_or_acquire() as producer:
        producer.publish(
            body, exchange=queue, routing_key=queue, headers={"id": uuid.uuid4().hex, **headers},
            content_type=content_type, content_encoding="utf-8", declare=[app.amqp.queues[queue]],
        )  # fmt: skip


def _send(d: Deployment, name: str, **options: Any) -> None:
    d.client.app.send_task(name, queue=d.settings.queue, **options)


#: task messages any producer can send, on either broker (name -> how to send it)
TASKS: dict[str, Callable[[Deployment], None]] = {
    "a body that is a JSON object": lambda d: _publish(
        d, json.dumps({"args": ["order-x"]}), GOOD_HEADERS, "application/json"
    ),
    "a body that is not JSON": lambda d: _publish(d, "not json", GOOD_HEADERS, "application/json"),
    "time limits that are not numbers": lambda d: _send(
        d, "fulfillment.process_payment", args=["order-x", 1], time_limit="a", soft_time_limit="b"
    ),
    "an eta that is not a time": lambda d: _publish(
        d,
        json.dumps([["order-x"], {}, {}]),
        {**GOOD_HEADERS, "eta": "tomorrow"},
        "application/json",
    ),
    "an unknown task": lambda d: _send(d, "fulfillment.no_such_task", args=["x"]),
    "a run id that is not a run id": lambda d: _send(
        d, "fulfillment.process_payment", args=[{"evil": True}], kwargs={"epoch": 1}
    ),
    "an epoch that is not a number": lambda d: _send(
        d, "fulfillment.reserve_inventory", args=["order-x"], kwargs={"epoch": "one"}
    ),
    "an undo with a step's arguments": lambda d: _send(
        d, "fulfillment.refund_payment", args=["order-x"], kwargs={"epoch": 2}
    ),
    "content that is not JSON": lambda d: _publish(
        d,
        base64.b64encode(b"\x80\x04pickle").decode(),
        GOOD_HEADERS,
        "application/x-python-serialize",
    ),
}


@pytest.fixture(params=["redis", "rabbitmq"])
def d(request: pytest.FixtureRequest, deploy) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    with broker_env(request.param) as env:
        yield deploy(**env)


def _dead_letters(d: Deployment) -> list[dict[str, str]]:
    return [fields for _, fields in d.redis.xrange(SharedKeys().dead_letters)]


def _refusals(worker: Worker) -> list[str]:
    return [ln for ln in worker.log.read_text().splitlines() if "refused" in ln]


def test_every_poison_message_is_refused_and_the_worker_carries_on(d: Deployment) -> None:
    worker = d.start_worker(concurrency=1)
    pid = worker.pid
    on_redis = not d.settings.broker_url
    kinds = {**(RAW if on_redis else {}), **TASKS}
    for poison in kinds.values():
        if isinstance(poison, str):
            d.redis.lpush(d.settings.queue, poison)
        else:
            poison(d)
    wait_until(lambda: len(_dead_letters(d)) >= len(kinds), 30, f"{len(kinds)} dead letters")
    letters = _dead_letters(d)
    order = d.client.place_order(order_doc())
    assert order.result(timeout=30).startswith("Order fulfilled")
    assert worker.alive() and worker.pid == pid, "the same worker process carried on"
    assert len(_dead_letters(d)) == len(kinds), [f["reason"] for f in _dead_letters(d)]
    for letter in letters:
        assert letter["reason"] and letter["worker"], letter
        assert letter["source"] in ("transport", "consumer")
    log = worker.log.read_text()
    assert "Traceback" not in log and "CRITICAL" not in log and "Unrecoverable" not in log, log[
        -3000:
    ]
    refusals = _refusals(worker)
    assert len(refusals) == len(kinds), refusals
    assert all("WARNING" in line for line in refusals)
    wait_until(lambda: d.queue_length() == 0, 30, "the queue to drain")

    # none of them comes back: a restarted worker refuses nothing more
    worker.proc.terminate()
    worker.proc.wait(30)
    again = d.start_worker(concurrency=1)
    assert d.client.place_order(order_doc()).result(timeout=30).startswith("Order fulfilled")
    assert _refusals(again) == [] and len(_dead_letters(d)) == len(kinds)


def test_dead_letters_are_listed_shown_and_dropped_from_the_cli(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    d.start_worker(concurrency=1)
    d.redis.lpush(d.settings.queue, "not json", _envelope("%%%"))
    card = "4111 1111 1111 1111"
    _send(d, "fulfillment.process_payment", args=[f"card {card}"], kwargs={"epoch": 1})
    wait_until(lambda: len(_dead_letters(d)) == 3, 30, "three dead letters")
    listed = json.loads(d.cli("dead-letters", "--json").stdout)
    assert len(listed) == 3 and listed[0]["at"] > listed[-1]["at"], "newest first"
    assert {letter["source"] for letter in listed} == {"transport", "consumer"}
    assert all(card not in json.dumps(letter) for letter in listed), "card numbers are masked"
    table = d.cli("dead-letters")
    assert table.returncode == 0 and "body is not base64" in table.stdout
    first = listed[0]["id"]
    shown = json.loads(d.cli("dead-letters", "show", first).stdout)
    assert shown["id"] == first and shown["payload"]
    assert d.cli("dead-letters", "drop", first).stdout.strip() == "dropped 1 dead letter(s)"
    assert len(_dead_letters(d)) == 2
    missing = d.cli("dead-letters", "show", first)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: no dead letter {first!r}"
    assert d.cli("dead-letters", "drop", "--all").stdout.strip() == "dropped 2 dead letter(s)"
    assert _dead_letters(d) == []
    usage = d.cli("dead-letters", "drop")
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1


def test_the_dead_letters_are_bounded(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(FULFILLMENT_DEAD_LETTER_LIMIT="5")
    worker = d.start_worker(concurrency=1)
    for i in range(200):
        d.redis.lpush(d.settings.queue, f"junk {i}")
    wait_until(lambda: len(_refusals(worker)) == 200, 60, "200 refusals")
    assert d.redis.xlen(SharedKeys().dead_letters) == 5, "the oldest went first"
    newest = d.redis.xrevrange(SharedKeys().dead_letters, count=1)[0][1]
    assert newest["payload"] == "junk 199"

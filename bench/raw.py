"""Run the raw-chain baseline: workers of ``bench.raw_app`` and the same measurements.

Each run counts completions on a list of its own (``raw:done:<uuid>``): the
warm-up chains of a run, or the tail of an earlier one, land on other lists and
can never make a measured chain look finished before it is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import psutil
import redis
from celery import chain

from .harness import OUT, CpuMeter, Throughput

WARM_UP = 50


@contextlib.contextmanager
def raw_workers(
    url: str, workers: int, concurrency: int, events: bool = True
) -> Iterator[tuple[redis.Redis, list[int]]]:
    """Workers of the raw app, with their pids; ``events``: task events on, as ours have them."""
    env = {**os.environ, "BENCH_RAW_URL": url, "BENCH_RAW_EVENTS": "1" if events else "0"}
    OUT.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(workers):
        name = f"raw{i}-{os.getpid()}@%h"
        cmd = [sys.executable, "-m", "celery", "-A", "bench.raw_app", "worker", "--pool",
               "prefork", "--concurrency", str(concurrency), "--hostname", name,
               "--queues", "raw", "--loglevel", "WARNING", "--without-gossip",
               "--without-mingle"]  # fmt: skip
        log = (OUT / "raw-workers.log").open("ab")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
    client = redis.Redis.from_url(url, socket_timeout=120)
    try:
        # ready once every warm-up chain completed (every pool process has run some)
        mod = _app(url)
        warm = _done_key()
        for _ in range(WARM_UP):
            _send(mod, "warm-up", warm)
        _wait_for(client, warm, WARM_UP, timeout=60)
        yield client, [proc.pid for proc in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            proc.kill()
            proc.wait()


def _app(url: str):  # type: ignore[no-untyped-def]
    os.environ.setdefault("BENCH_RAW_URL", url)  # read once, when raw_app is imported
    from . import raw_app

    if url != raw_app.URL:
        raise RuntimeError(f"the raw app is bound to {raw_app.URL}; use one URL per run")
    return raw_app


def _done_key() -> str:
    return f"raw:done:{uuid.uuid4().hex}"


def _send(mod, chain_id: str, done_key: str) -> None:  # type: ignore[no-untyped-def]
    chain(
        mod.step.si(chain_id), mod.step.si(chain_id), mod.last.si(chain_id, done_key)
    ).apply_async()


def _wait_for(client: redis.Redis, key: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.llen(key) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw chains: {client.llen(key)} of {n} done after {timeout}s")
        time.sleep(0.002)
    client.delete(key)


def throughput(
    url: str, n: int, workers: int = 1, concurrency: int = 2, events: bool = True
) -> Throughput:
    mod = _app(url)
    with raw_workers(url, workers, concurrency, events) as (client, pids):
        done = _done_key()
        cpu = CpuMeter(client, pids)
        started = time.perf_counter()
        for _ in range(n):
            _send(mod, uuid.uuid4().hex, done)
        _wait_for(client, done, n, timeout=600)
        return Throughput(n / (time.perf_counter() - started), cpu.per_order(n))


@contextlib.contextmanager
def sequential(url: str, concurrency: int = 2) -> Iterator[Callable[[], float]]:
    """A warmed-up raw worker; yields ``one()``: send one chain and wait for it, in ms."""
    mod = _app(url)
    with raw_workers(url, 1, concurrency) as (client, _):
        done = _done_key()
        sent = iter(range(10**9))

        def one() -> float:
            chain_id = f"latency-{next(sent)}"
            started = time.perf_counter()
            _send(mod, chain_id, done)
            popped = client.blpop([done], timeout=30)
            elapsed = (time.perf_counter() - started) * 1000
            if popped is None or popped[1].decode() != chain_id:
                raise RuntimeError(f"raw chain {chain_id} did not complete in order: {popped}")
            return elapsed

        yield one

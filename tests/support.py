"""Test deployments: a database on the test server, its environment, real worker processes.

Every process a deployment starts (worker main processes and their pool children,
CLI invocations) is tracked and killed when the deployment closes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import redis

from fulfillment.engine.config import is_amqp
from fulfillment.engine.keys import SharedKeys
from fulfillment.ops.processes import live_workers, worker_command
from fulfillment.orders.client import FulfillmentClient
from fulfillment.orders.settings import Settings, load_settings
from fulfillment.orders.state import OrderStatus, OrderView

# Time-scaled settings: the demo's numbers, shrunk so the suite is fast.
SCALED: dict[str, str] = {
    "FULFILLMENT_SERVICE_LATENCY": "0",
    "FULFILLMENT_STEP_TIME_LIMIT": "1",
    "FULFILLMENT_RETRY_INITIAL_INTERVAL": "0.1",
    "FULFILLMENT_RETRY_MAXIMUM_INTERVAL": "2",
    "FULFILLMENT_APPROVAL_TIMEOUT": "30",
    "FULFILLMENT_WATCHDOG_INTERVAL": "0.2",
    "FULFILLMENT_WORKER_DEAD_AFTER": "1",
    "FULFILLMENT_LEASE_GRACE": "0.5",
    "FULFILLMENT_REDRIVE_GRACE": "0.5",
    "FULFILLMENT_QUEUE_GRACE": "1",
    "FULFILLMENT_APPROVAL_GRACE": "0.2",
    "FULFILLMENT_COMPENSATION_GRACE": "1",
}

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def base_env() -> dict[str, str]:
    """This process's environment without any FULFILLMENT_* setting of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILLMENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def interruptible() -> None:
    """``preexec_fn`` for a process a test will Ctrl-C: SIGINT at its default action. A
    process started in the background by a non-interactive shell (CI run with ``&``)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def answers(client: redis.Redis) -> bool:
    """Does the server behind ``client`` answer PING yet?"""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and every descendant (pool children outlive a SIGKILLed parent)."""
    try:
        proc = psutil.Process(pid)
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def processes_using(url: str) -> list[psutil.Process]:
    """Live processes whose environment points at ``url`` (leftovers of a test)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            mine = proc.environ().get("FULFILLMENT_REDIS_URL") == url
            if mine and proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


class Worker:
    """One ``celery worker`` main process, started by a deployment."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.family: set[int] = {proc.pid}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember_children(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.family |= {c.pid for c in psutil.Process(self.pid).children(recursive=True)}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the main process only, as a crash would (its pool children are orphaned)."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP the whole process group: main process and pool children freeze at once."""
        self.remember_children()
        for pid in self.family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every process :meth:`pause` stopped."""
        for pid in self.family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        self.remember_children()
        for pid in self.family:
            kill_tree(pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


class Deployment:
    """One isolated deployment: its own database, settings, workers and client."""

    _names = itertools.count(1)

    def __init__(self, url: str, workdir: Path, **overrides: str) -> None:
        self.url = url
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = base_env()
        self.env.update(SCALED)
        self.env["FULFILLMENT_REDIS_URL"] = url
        self.env["FULFILLMENT_DATA_DIR"] = str(workdir / "data")
        self.env.update({k: str(v) for k, v in overrides.items()})
        self.settings: Settings = load_settings(
            **{
                k.removeprefix("FULFILLMENT_").lower(): json.loads(v)
                if k.endswith("POLICIES")
                else v
                for k, v in self.env.items()
                if k.startswith("FULFILLMENT_")
            }
        )
        self.client = FulfillmentClient(self.settings)
        self.redis: redis.Redis = (
            self.client.store.client  # follows the sentinels, or routes over the cluster
            if url.startswith(("sentinel://", "redis+cluster://"))
            else redis.Redis.from_url(url, decode_responses=True)
        )
        self.workers: list[Worker] = []

    # --- workers ------------------------------------------------------------------------

    def start_worker(
        self,
        concurrency: int = 1,
        name: str | None = None,
        wait: bool = True,
        loglevel: str = "INFO",
        app: str = "fulfillment",
        **env: str,
    ) -> Worker:
        """A worker of ``app`` (a module under the repository, e.g. a test's own app)."""
        name = name or f"w{next(self._names)}-{os.getpid()}@%h"
        log = self.workdir / f"{name.split('@')[0]}.log"
        cmd = worker_command(
            name, queue=self.settings.queue, concurrency=concurrency, loglevel=loglevel, app=app
        )
        proc_env = {**self.env, "PYTHONPATH": str(REPO), **env}
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=out, cwd=self.workdir)
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        if wait:
            self.wait_for_worker(worker)
        return worker

    def worker_ids(self) -> list[str]:
        return live_workers(self.redis, self.settings)

    def wait_for_worker(self, worker: Worker, timeout: float = 60) -> None:
        node = worker.name.replace("%h", os.uname().nodename)

        def up() -> bool:
            if not worker.alive():
                raise AssertionError(
                    f"worker {worker.name} exited:\n{worker.log.read_text()[-3000:]}"
                )
            return any(w.rsplit(":", 1)[0] == node for w in self.worker_ids())

        wait_until(up, timeout, f"worker {worker.name} to heartbeat")
        worker.remember_children()

    # --- orders ---------------------------------------------------------------------------

    def wait(self, order_id: str, timeout: float = 30) -> OrderView:
        """The order once it is finished and settled (compensations done)."""
        return wait_until(
            lambda: (v := self.client.get_order(order_id)).settled and v,
            timeout,
            f"order {order_id} to finish",
        )

    def awaiting_approval(self, order_ids: Iterable[str]) -> list[str]:
        """Place an order over the threshold under each id; return once all of them wait."""
        ids = list(order_ids)
        for order_id in ids:
            self.client.place_order(order_doc(EXPENSIVE, order_id=order_id))
        for order_id in ids:
            self.wait_status(order_id, OrderStatus.AWAITING_APPROVAL)
        return ids

    def wait_status(self, order_id: str, status: OrderStatus, timeout: float = 30) -> OrderView:
        return wait_until(
            lambda: (v := self.client.get_order(order_id)).status is status and v,
            timeout,
            f"order {order_id} to reach {status.value}",
        )

    def explain(self, order_id: str) -> str:
        """The order's record and history, for a failure message."""
        record = {k: v for k, v in self.client.store.record(order_id).items() if k != "order"}
        events = [(e[1], e[2]) for e in self.client.store.history(order_id)]
        lines = [f"{order_id}: {record}"] + [f"    {t} {d}" for t, d in events]
        for key in self.redis.scan_iter(SharedKeys().held("*")):
            mine = [m for m in self.redis.smembers(key) if m.startswith(order_id + ":")]
            if mine:
                lines.append(f"    held by {key} (ttl {self.redis.pttl(key)} ms): {mine}")
        lines.append(
            f"    workers: {self.redis.zrange(SharedKeys().workers, 0, -1, withscores=True)}"
        )
        lines.append(f"    queue length: {self.queue_length()}")
        return "\n".join(lines)

    def queue_length(self) -> int:
        """Messages waiting in this deployment's queue, on Redis or on RabbitMQ."""
        broker = self.settings.broker_url or ""
        if not is_amqp(broker):
            return int(self.redis.llen(self.settings.queue))
        with self.client.app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(self.settings.queue, passive=True)
            return int(declared.message_count)

    def wait_all_settled(self, order_ids: list[str], timeout: float) -> None:
        """Every order settled (finished, compensations done), or fail naming those that are not."""
        deadline = time.monotonic() + timeout
        pending = list(order_ids)
        while pending:
            views = self.client.store.records(pending)
            pending = [
                i for i, r in zip(pending, views, strict=True)
                if not r or not OrderView.from_record(r).settled
            ]  # fmt: skip
            if not pending:
                return
            if time.monotonic() > deadline:
                shown = "\n".join(self.explain(i) for i in pending[:3])
                raise AssertionError(
                    f"{len(pending)} order(s) not settled after {timeout:g}s:\n{shown}"
                )
            time.sleep(0.2)

    def ledger(self, order_id: str) -> dict[str, str]:
        return self.client.ledger(order_id)

    # --- CLI ------------------------------------------------------------------------------

    def cli(
        self, *args: str, input: str | bytes | None = None, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``fulfillment`` console script against this deployment."""
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("fulfillment")), *args],
            input=data,
            capture_output=True,
            timeout=timeout,
            env={**self.env, "COLUMNS": "200", **env},
            cwd=self.workdir,
        )
        return subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.destroy()
        self.workers.clear()
        with contextlib.suppress(redis.RedisError):
            self.redis.close()


def order_doc(
    *lines: tuple[str, str, int],
    card: str = "4111 1111 1111 1111",
    expiration: str = "12/39",
    order_id: str | None = None,
) -> dict[str, Any]:
    """An order in the demo's camelCase JSON shape."""
    lines = lines or (
        ("Noise-Cancelling Headset", "319.99", 1),
        ("USB-C Charging Dock", "89.00", 2),
    )
    doc: dict[str, Any] = {
        "items": [{"itemName": n, "itemPrice": p, "quantity": q} for n, p, q in lines],
        "payment": {"creditCard": {"number": card, "expiration": expiration}},
    }
    if order_id:
        doc["id"] = order_id
    return doc


EXPENSIVE = ("Electric Cargo Bike", "4890.00", 3)


def assert_no_redrive_with_one_busy_worker(d: Deployment) -> None:
    """20 orders on one worker process, inventory down for 4 attempts: every retry waits
    its turn behind the others, and none of them may be taken for lost (no worker dies)."""
    from fulfillment.orders.services import set_fault

    d.start_worker(concurrency=1)
    set_fault(d.redis, "inventory", attempts=4)
    handles = [d.client.place_order(order_doc()) for _ in range(20)]
    for h in handles:
        assert h.result(timeout=120).startswith("Order fulfilled")
    for h in handles:
        types = [e.type for e in h.history()]
        assert "redriven" not in types and "result_discarded" not in types, d.explain(h.id)
        assert h.view().steps[1].attempts == 5


def start_workers(d: Deployment, n: int, **kwargs: object) -> list[Worker]:
    """Start ``n`` workers at once, then wait for each to heartbeat."""
    workers = [d.start_worker(wait=False, **kwargs) for _ in range(n)]  # type: ignore[arg-type]
    for w in workers:
        d.wait_for_worker(w)
    return workers


def freeze_worker_running(d: Deployment, oid: str, step: str) -> Worker | None:
    """SIGSTOP the worker running ``step`` of the order; None unless it is still running there."""
    record = d.client.store.record(oid)
    if record.get("phase") != "running" or record.get("step") != step:
        return None
    pid = int(record["worker"].rsplit(":", 1)[1])
    worker = next(w for w in d.workers if w.pid == pid)
    worker.pause()
    again = d.client.store.record(oid)
    if all(again.get(k) == record.get(k) for k in ("phase", "step", "task_id")):
        return worker
    worker.resume()
    return None

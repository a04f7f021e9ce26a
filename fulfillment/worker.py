"""The worker side: identity, heartbeat and the watchdog, as a Celery bootstep.

Every worker runs a small thread that, every ``watchdog_interval`` seconds, runs
``tick.lua``: it records the worker's heartbeat and tries to take (or keep) the
watchdog lock. The lock holder re-drives what is overdue:

* running attempts whose lease expired, or whose worker stopped heartbeating
  (then it does not wait for the lease: failover takes ``worker_dead_after``);
* retries and queued steps whose message is really lost: not started in time,
  not held by any live worker (each heartbeat says which messages its worker
  holds: prefetched, waiting for a countdown, running) and not waiting in a
  queue with a backlog;
* approval waits past their deadline (the countdown task was lost);
* compensations whose claim's lease ran out, or whose message is really lost.

Every re-send waits twice as long as the one before, so a slow queue never
multiplies messages.

Any live worker takes over the lock when its holder dies; there is no separate
singleton process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import billiard.pool
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, bootsteps
from celery.signals import task_postrun, task_prerun, worker_shutdown

from . import workflow
from .connection import redis_client, resolve_redis_url
from .keys import OrderKeys
from .scripts import as_list, csv
from .services import seed_stock
from .settings import Settings, get_settings
from .store import US, OrderStore

log = logging.getLogger(__name__)

_worker_id: str | None = None
PRUNE_EVERY = 20  # ticks between two scans for expired orders in the status indexes


def worker_id() -> str:
    """This worker's identity, ``<nodename>:<main pid>``; pool processes inherit it."""
    return _worker_id or f"{socket.gethostname()}:{os.getpid()}"


class Watchdog(threading.Thread):
    """Heartbeat of one worker, and the watchdog while it holds the lock."""

    def __init__(self, app: Celery, worker: str, settings: Settings) -> None:
        super().__init__(name="fulfillment-watchdog", daemon=True)
        self.app = app
        self.worker = worker
        self.settings = settings
        self.store = OrderStore(
            redis_client(resolve_redis_url(settings), settings.sentinel_master), settings
        )
        # the broker's lists of the queue, as kombu names them (global_keyprefix)
        prefix = (app.conf.broker_transport_options or {}).get("global_keyprefix", "")
        self.queues = [prefix + settings.queue]
        self._stopping = threading.Event()
        self._connected_since: float | None = None
        self._last_error_log = 0.0
        self._ticks = 0
        self._backlog = 0
        self._alive: list[str] = []

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        try:
            self.store.leave(self.worker)
        except Exception:  # Redis gone at shutdown: the heartbeat just ages out
            log.debug("could not remove heartbeat of %s", self.worker, exc_info=True)

    def run(self) -> None:
        while not self._stopping.wait(self.settings.watchdog_interval):
            try:
                self.tick()
                if self._connected_since is None:
                    self._connected_since = time.monotonic()
            except Exception as exc:
                self._connected_since = None
                if time.monotonic() - self._last_error_log > 10:
                    self._last_error_log = time.monotonic()
                    log.warning("watchdog tick failed (will keep trying): %r", exc)

    def tick(self) -> None:
        """One heartbeat; if this worker holds the lock, re-drive what is due."""
        due = self.store.tick(self.worker, self.queues, held_messages())
        if not due["leader"]:
            return
        self._ticks += 1
        if self._ticks % PRUNE_EVERY == 1:
            self.store.prune_expired(int(due["now"]))
        self._backlog = int(due["backlog"])
        self._alive = as_list(due["alive"])
        for zset in ("leases", "timers", "queued"):
            for order_id in as_list(due[zset]):
                self.redrive(order_id, "due")
        dead = set(as_list(due["dead"]))
        if dead and self._trusts_heartbeats():
            self.redrive_dead_workers(dead, as_list(due["running"]))
            now = int(due["now"])
            self.store.forget_dead_workers(now - int(self.settings.worker_dead_after * US))

    def _trusts_heartbeats(self) -> bool:
        # Right after this watchdog was cut off from Redis, everyone's heartbeats
        # look old: wait one dead-after period before believing any of them.
        if self._connected_since is None:
            return False
        return time.monotonic() - self._connected_since >= self.settings.worker_dead_after

    def redrive_dead_workers(self, dead: set[str], running: list[str]) -> None:
        if not running:
            return
        holders = self.store.client.pipeline(transaction=False)
        for order_id in running:
            holders.hget(OrderKeys(order_id).record, "worker")
        for order_id, holder in zip(running, holders.execute(), strict=True):
            if holder in dead:
                self.redrive(order_id, "worker_lost", holder)

    def redrive(self, order_id: str, reason: str, worker: str | None = None) -> None:
        out = self.store.redrive(order_id, reason, worker, backlog=self._backlog, alive=self._alive)
        act_on(self.app, self.settings, order_id, out)
        if out["v"] != "noop":
            log.info("watchdog: order %s: %s", order_id, out)


def held_messages() -> list[str]:
    """Ids of the messages this worker process holds: prefetched, scheduled, running.

    Celery keeps them in ``celery.worker.state.requests`` (main process) until the
    task is done; the heartbeat reports them so that the watchdog never takes a
    message that is only waiting for a free pool process for a lost one.
    """
    from celery.worker import state

    try:
        return list(state.requests)
    except RuntimeError:  # changed while copied: report the next heartbeat
        return []


def act_on(app: Celery, settings: Settings, order_id: str, out: dict[str, Any]) -> None:
    """Send what a transition's reply asks for: the chain, or compensations."""
    if out["v"] == "dispatch":
        workflow.dispatch(
            app,
            order_id,
            out["step"],
            int(out["epoch"]),
            out.get("summary"),
            queue=settings.queue,
            countdown=int(out.get("countdown_us", 0)) / US,
        )
    send = csv(out.get("send"))
    if send:
        workflow.dispatch_compensations(app, order_id, send, queue=settings.queue)


# --- soft time limits that arrive late ------------------------------------------------
#
# billiard's main process times each job and sends its pool process SIGUSR1 when the
# soft limit passes. If the main process was paused (SIGSTOP) or busy while the job
# finished, it still sends it once it runs again: to a process that is idle, or
# already receiving its next job. billiard's handler then raises
# SoftTimeLimitExceeded in the middle of reading that job from its pipe; the pool
# process dies, the job it was reading is lost, and the worker holds that message
# forever (seen in the chaos suite). A soft limit means "the running task took too
# long": with no task running, it is ignored.

_task_running = False


@task_prerun.connect(weak=False)
def _task_starts(**_: Any) -> None:
    global _task_running
    _task_running = True


@task_postrun.connect(weak=False)
def _task_ends(**_: Any) -> None:
    global _task_running
    _task_running = False


def _soft_timeout_if_running(signum: int, frame: Any) -> None:
    if _task_running:
        raise SoftTimeLimitExceeded()
    log.warning("ignored a soft time limit that arrived after its task had finished")


class WatchdogStep(bootsteps.StartStopStep):
    """Worker bootstep: fixes the worker's identity and runs its :class:`Watchdog`."""

    label = "fulfillment watchdog"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        global _worker_id
        # Set before the pool forks, so pool processes inherit the identity.
        _worker_id = f"{worker.hostname}:{os.getpid()}"
        # billiard installs this module attribute as each pool process's handler
        billiard.pool.soft_timeout_sighandler = _soft_timeout_if_running
        self.watchdog: Watchdog | None = None
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        settings = get_settings()
        seed_stock(redis_client(resolve_redis_url(settings), settings.sentinel_master))
        self.watchdog = Watchdog(worker.app, worker_id(), settings)
        self.watchdog.start()

        # Keep heartbeating until the pool has drained (warm shutdown):
        # worker_shutdown is sent after every bootstep stopped.
        def _on_shutdown(sender: Any = None, **_: Any) -> None:
            if self.watchdog is not None:
                self.watchdog.stop()
                self.watchdog = None

        self._on_shutdown = _on_shutdown  # keep a strong reference for the signal
        worker_shutdown.connect(_on_shutdown, weak=False)

    def stop(self, worker: Any) -> None:
        """Nothing here: the heartbeat must outlive the pool (see ``start``)."""

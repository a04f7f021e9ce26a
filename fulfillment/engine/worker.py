"""The worker side of the engine: identity, heartbeat and the watchdog, as a Celery bootstep.

Every worker runs a small thread that, every ``watchdog_interval`` seconds, runs
``tick.lua``: it records the worker's heartbeat, with the ids of the messages the
worker holds (prefetched, waiting for a countdown, running), and tries to take (or
keep) the watchdog lock. The lock holder looks at what is due in every workflow
registered on the app:

* running attempts whose lease expired, or whose worker is gone: it stopped
  heartbeating (``worker_dead_after``), or, sooner, its heartbeat connection closed
  and it missed a heartbeat (a killed process's connections close at once; each
  worker heartbeats on a connection named after it);
* the messages a dead worker held (prefetched, waiting for a countdown): their steps
  are sent again at once, under a new epoch (no message is kept by the transport
  for a worker that dies: see ``config.py``, ``ack_emulation``);
* queued steps, retries and compensations whose message is really lost: not
  started in time, not held by any live worker and not waiting in a queue (the
  Redis queues are looked through for it; a RabbitMQ queue with a backlog is
  trusted; either way at most ``queue_stall_limit``);
* gates past their deadline (the countdown task was lost);
* compensations whose claim's lease ran out.

Every re-send waits twice as long as the one before, so a slow queue never
multiplies messages. Any live worker takes over the lock once its holder misses a
heartbeat (killed or stalled), without waiting for the lock to run out;
there is no separate singleton process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import billiard.pool
import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import bootsteps
from celery.signals import task_postrun, task_prerun, worker_shutdown
from celery.worker import state as worker_state

from .broker import BrokerRefused, check_broker
from .config import is_amqp
from .connection import named_client
from .consumer import keep_refused_payloads
from .delivery import Delivery
from .identity import set_worker_id, worker_id
from .keys import BucketKeys, SharedKeys
from .replies import US, Dispatch, NotLive, Tick
from .runtime import Engine, WorkflowRuntime
from .scripts import engine_scripts

log = logging.getLogger(__name__)

LIMIT = 200  # runs looked at per workflow and tick, at most
PRUNE_EVERY = 20  # ticks between two scans for expired runs in the status indexes
#: a worker whose last beat is older than this many heartbeat periods has missed one
MISSED_BEAT = 1.2
REINDEX_EVERY = 60  # ticks between two rebuilds of a cluster's due shards (a safety net)
QUEUED_LIMIT = 20_000  # messages of the Redis queues looked at for ids, at most, per tick


def presence_name(keys: SharedKeys, worker: str) -> str:
    """The name of a worker's heartbeat connection (``CLIENT SETNAME``)."""
    return f"{keys.namespace}:worker:{worker}".replace(" ", "_")


def held_messages() -> list[str]:
    """The task ids of the messages this worker process holds (prefetched, scheduled,
    running).

    Celery keeps them in ``celery.worker.state.requests`` (main process) until the task
    is done (and drops them when the broker connection is lost); the heartbeat reports
    them, so that the watchdog never takes a message that waits for a free pool process
    for a lost one, and, once this worker is dead, sends the steps of the messages it
    held again at once.
    """
    try:
        return list(worker_state.requests)
    except RuntimeError:  # changed while copied: report the next heartbeat
        return []


class Watchdog(threading.Thread):
    """Heartbeat of one worker, and the watchdog while it holds the lock."""

    def __init__(self, engine: Engine, worker: str) -> None:
        super().__init__(name="fulfillment-watchdog", daemon=True)
        self.engine = engine
        self.worker = worker
        self.settings = engine.settings
        self.runtimes: list[WorkflowRuntime] = list(engine.workflows.values())
        self.delivery = {rt.workflow.name: Delivery(rt) for rt in self.runtimes}
        self._stopping = threading.Event()
        self._connected_since: float | None = None
        self._last_error_log = 0.0
        self._ticks = 0
        self._tick = engine.scripts
        self._backlog = 0
        self._alive: tuple[str, ...] = ()
        self._held: dict[str, list[str]] = {}
        #: per run, the ids of its messages waiting in a queue / held by a dead worker
        self._queued: dict[str, list[str]] = {}
        self._lost: dict[str, list[str]] = {}
        self._broker: Any = None  # a connection to a broker that is not the store's Redis
        #: the heartbeat's own client, its connection named after this worker (one server)
        self._presence = named_client(self.settings, presence_name(engine.keys, worker))
        self._scripts = engine.scripts if self._presence is None else engine_scripts(
            self._presence
        )  # fmt: skip

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        if self._broker is not None:
            with contextlib.suppress(Exception):
                self._broker.release()
        try:
            self.leave()
        except Exception:  # Redis gone at shutdown: the heartbeat just ages out
            log.debug("could not remove heartbeat of %s", self.worker, exc_info=True)

    def leave(self) -> None:
        """A worker shutting down cleanly stops counting as alive at once."""
        client, keys = self.engine.client, self.engine.keys
        client.zrem(keys.workers, self.worker)
        client.delete(keys.held(self.worker))
        if client.get(keys.watchdog_lock) == self.worker:
            client.delete(keys.watchdog_lock)

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

    @property
    def clustered(self) -> bool:
        return self.engine.router is not None

    def heartbeat(self, limit: int = LIMIT) -> Tick:
        """``tick.lua``: the heartbeat, the lock, and on one server what is due (on a
        cluster the buckets are looked at through their due shards: :meth:`due`)."""
        s = self.settings
        shared = self.engine.keys
        keys = [shared.workers, shared.watchdog_lock, shared.held(self.worker)]
        runtimes = [] if self.clustered else self.runtimes
        keys += [rt.space.due for rt in runtimes]
        if self.engine.holds_messages:  # the broker's queues are lists of this server
            keys += self.engine.queues
        reply = self._scripts.call(
            "tick",
            keys,
            {
                "worker": self.worker,
                "lock_ttl_ms": int(max(3 * s.watchdog_interval, 1.0) * 1000),
                "takeover_us": int(MISSED_BEAT * s.watchdog_interval * US),
                "dead_after_us": int(s.worker_dead_after * US),
                "limit": limit,
                "nw": len(runtimes),
                "held": held_messages(),
            },
        )
        return Tick.model_validate(reply)

    def due(
        self, tick: Tick
    ) -> list[tuple[WorkflowRuntime, list[str], list[tuple[BucketKeys, str]]]]:
        """What is due in each workflow: from the tick on one server, from the due shards
        on a cluster (only the buckets that have something due are read)."""
        if not self.clustered:
            return [(rt, list(ids), []) for rt, ids in zip(self.runtimes, tick.due, strict=False)]
        out = []
        for rt in self.runtimes:
            ids, buckets = rt.store.due_on_cluster(tick.now_us, LIMIT)
            out.append((rt, ids, buckets))
        return out

    def tick(self) -> None:
        """One heartbeat; if this worker holds the lock, re-drive what is due."""
        tick = self.heartbeat()
        if not tick.leader:
            return
        self._ticks += 1
        self._backlog = tick.backlog
        self._queued = {}
        self._lost = {}
        self._alive = tuple(tick.alive)
        due = self.due(tick)
        if any(ids for _, ids, _ in due):
            if is_amqp(str(self.engine.app.conf.broker_url)):
                self._backlog += self.broker_backlog()
            elif self._backlog and self.engine.holds_messages:
                self.look_in_queues()
            self._held = self.held_by_live_workers()
        for rt, ids, buckets in due:
            if self._ticks % PRUNE_EVERY == 1:
                rt.store.prune_expired(tick.now_us)
            for run_id in ids:
                self.redrive(rt, run_id, "due")
            if buckets:
                rt.store.reindex(buckets)
            if self.clustered and self._ticks % REINDEX_EVERY == 1:
                rt.store.reindex_all()
        if not self._trusts_heartbeats():
            return
        dead = [*tick.dead, *self.gone(tick)]
        if dead:
            self._alive = tuple(w for w in self._alive if w not in dead)
            self._held = self.held_by_live_workers()
            self._lost = self.held_by(dead)
            for i, rt in enumerate(self.runtimes):
                # the tick reads every scheduled run only when a heartbeat is too old
                from_tick = not self.clustered and tick.dead
                scheduled = list(tick.scheduled[i]) if from_tick else rt.store.scheduled()
                self.redrive_dead_workers(rt, frozenset(dead), scheduled)
            keys = self.engine.keys
            self.engine.client.zrem(keys.workers, *dead)
            self.engine.client.delete(*(keys.held(w) for w in dead))

    def broker_backlog(self) -> int:
        """Messages waiting in the workflows' queues on RabbitMQ (``tick.lua`` counts them
        where the broker is Redis): a passive declare reports each queue's count. When
        the broker does not answer, every queue counts as busy, so nothing is taken for
        lost (its messages may well be waiting there)."""
        queues = sorted({rt.queue for rt in self.runtimes})
        try:
            if self._broker is None:
                self._broker = self.engine.app.connection_for_read()
            channel = self._broker.default_channel
            return sum(channel.queue_declare(queue=q, passive=True).message_count for q in queues)
        except Exception as exc:
            log.debug("broker backlog unknown: %r", exc)
            with contextlib.suppress(Exception):
                self._broker.release()
            self._broker = None
            return len(queues)

    def gone(self, tick: Tick) -> list[str]:
        """Live-looking workers that are gone: their heartbeat connection closed (a killed
        process's connections close at once) and they missed a heartbeat since (1.2
        heartbeat periods). Found within about a heartbeat instead of
        ``worker_dead_after``; a worker cut off from Redis for a moment reconnects at its
        next heartbeat and is not counted. Only on one server (``CLIENT LIST``); where the
        server refuses it, never."""
        if self._presence is None:
            return []
        try:
            names = {c.get("name") for c in self._presence.client_list(_type="normal")}
        except redis.RedisError as exc:
            log.info("workers are found dead by their heartbeats only (CLIENT LIST: %s)", exc)
            self._presence = None
            return []
        keys = self.engine.keys
        missing = [w for w in tick.alive if presence_name(keys, w) not in names]
        if not missing:
            return []
        silent_since = tick.now_us - int(MISSED_BEAT * self.settings.watchdog_interval * US)
        beats = self.engine.client.zmscore(keys.workers, missing)
        return [w for w, beat in zip(missing, beats, strict=True)
                if beat is not None and beat < silent_since and w != self.worker]  # fmt: skip

    def recover_previous_incarnation(self) -> int:
        """A worker that starts under an id still listed as alive is a restart of that very
        worker (a container restarted: the same host name, and PID 1 again): the previous
        process is dead for sure, and its heartbeat would otherwise look like this one's.
        Its running attempts and the messages it held are sent again now, before this
        worker takes any message. Returns how many runs were looked at."""
        keys, client = self.engine.keys, self.engine.client
        if client.zscore(keys.workers, self.worker) is None:
            return 0
        log.warning("worker %s restarted: what its previous process ran or held is sent again",
                    self.worker)  # fmt: skip
        self._lost = self.held_by([self.worker])
        looked = 0
        for rt in self.runtimes:
            scheduled = rt.store.scheduled()
            looked += len(scheduled)
            self.redrive_dead_workers(rt, frozenset({self.worker}), scheduled)
        client.zrem(keys.workers, self.worker)
        client.delete(keys.held(self.worker))
        self._lost = {}
        return looked

    def look_in_queues(self) -> None:
        """Which messages wait in the queues right now (the broker is the store's Redis):
        a due run whose message is there is not lost, backlog or not. Looks at up to
        ``QUEUED_LIMIT`` messages; behind a longer queue, the backlog is trusted instead
        (``FULFILLMENT_QUEUE_STALL_LIMIT``)."""
        reply = self.engine.scripts.call("queued", self.engine.queues, {"limit": QUEUED_LIMIT})
        if not reply.get("complete"):
            return
        self._backlog = 0
        for message in reply.get("ids") or []:
            self._queued.setdefault(message.rsplit(":", 2)[0], []).append(message)

    def _trusts_heartbeats(self) -> bool:
        # Right after this watchdog was cut off from Redis, everyone's heartbeats look
        # old: wait one dead-after period before believing any of them.
        if self._connected_since is None:
            return False
        return time.monotonic() - self._connected_since >= self.settings.worker_dead_after

    def redrive_dead_workers(
        self, rt: WorkflowRuntime, dead: frozenset[str], scheduled: list[str]
    ) -> None:
        """Fail over the attempts the dead workers were running (without waiting for
        leases), and send again the steps of the messages they held (prefetched, or
        waiting for a countdown)."""
        if not scheduled:
            return
        for run_id, holder in zip(scheduled, rt.store.workers_of(scheduled), strict=True):
            if holder in dead:
                self.redrive(rt, run_id, "worker_lost", holder)
            elif run_id in self._lost:
                self.redrive(rt, run_id, "due")

    def held_by(self, workers: Iterable[str]) -> dict[str, list[str]]:
        """The ids of the messages ``workers`` held at their last heartbeat, by run."""
        sets = [self.engine.keys.held(w) for w in workers]
        members: Any = self.engine.client.sunion(sets) if sets else []
        return self._by_run(members)

    @staticmethod
    def _by_run(messages: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for message in messages:
            out.setdefault(message.rsplit(":", 2)[0], []).append(message)
        return out

    def held_by_live_workers(self) -> dict[str, list[str]]:
        """The ids of the messages live workers hold, by run (from their heartbeats)."""
        if not self._alive:
            return {}
        held = [self.engine.keys.held(w) for w in self._alive]
        members: Any = self.engine.client.sunion(held)
        return self._by_run(members)

    def redrive(
        self, rt: WorkflowRuntime, run_id: str, reason: str, worker: str | None = None
    ) -> None:
        out = rt.store.redrive(
            run_id, reason, worker, backlog=self._backlog, held=self._held.get(run_id, ()),
            queued=self._queued.get(run_id, ()), lost=self._lost.get(run_id, ()),
        )  # fmt: skip
        self.delivery[rt.workflow.name].act(run_id, out)
        if not isinstance(out, NotLive):
            step = out.step if isinstance(out, Dispatch) else ""
            log.info("watchdog: %s %s: %s %s", rt.workflow.noun, run_id, out.kind.value,
                     out.reason or step)  # fmt: skip


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
        # Set before the pool forks, so pool processes inherit the identity.
        set_worker_id(worker.hostname)
        # billiard installs this module attribute as each pool process's handler
        billiard.pool.soft_timeout_sighandler = _soft_timeout_if_running
        engine = Engine.of(worker.app)
        engine.check_overrides()
        try:
            check_broker(worker.app, engine.settings)
        except BrokerRefused as exc:
            log.error("%s", exc)
            raise
        keep_refused_payloads(engine)
        self.watchdog: Watchdog | None = Watchdog(engine, worker_id())
        try:  # before this worker takes any message
            self.watchdog.recover_previous_incarnation()
        except Exception as exc:  # Redis out of reach: the watchdog's leases cover it later
            log.warning("could not look for a previous process of this worker: %r", exc)
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        if self.watchdog is None:
            self.watchdog = Watchdog(Engine.of(worker.app), worker_id())
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

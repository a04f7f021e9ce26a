"""The run store: every state change of a run is one Lua script call here.

This module only marshals arguments and types the replies (a model per kind of reply,
:mod:`~fulfillment.engine.replies`, parsed here once); the rules live in
``fulfillment/engine/lua``. Times cross the boundary as integer microseconds of the
Redis server clock.

On a Redis Cluster a run's keys and its bucket's indexes share a slot
(:mod:`fulfillment.engine.keys`), so every transition stays one script on one node;
reads across runs (lists, counts, metrics, what is due) fan out over the buckets, one
pipeline per node, and merge.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import redis

from .cluster import NON_LOCAL, RIDE_OUT, Router
from .keys import BucketKeys, KeySpace, RunStatus
from .replies import (
    US,
    BeginReply,
    BeginUndoReply,
    CancelReply,
    CompleteReply,
    CreateReply,
    DispatchReply,
    FailReply,
    GateReply,
    RedriveReply,
    Reply,
    RetryReply,
    SignalReply,
    UndoFailedReply,
    UndoneReply,
    UnsentReply,
    parse,
)
from .scripts import Scripts
from .settings import EngineSettings
from .transport import Outbox


def us(seconds: float) -> int:
    return round(seconds * US)


def _score(pair: tuple[str, float]) -> float:
    return pair[1]


class RunStore:
    """Atomic transitions and reads of the runs of one workflow."""

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        space: KeySpace,
        settings: EngineSettings,
        router: Router | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.space = space
        self.settings = settings
        self.router = router
        self._common = {
            "queue_grace_us": us(settings.queue_grace),
            "comp_grace_us": us(settings.compensation_grace),
            "retention_s": settings.retention,
            "nc": len(space.companions),
        }

    def _call(
        self,
        script: str,
        run_id: str,
        outbox: Outbox | None = None,
        extra_keys: list[str] | None = None,
        **args: Any,
    ) -> Reply:
        held = outbox or []
        pushes = [k for p in held if not p.publish for k in (p.key, *p.expire_keys)]
        if held:
            args["outbox"] = [
                {"p": p.key} if p.publish else {"n": len(p.expire_keys), "ms": p.expire_ms}
                for p in held
            ]
        keys = self.space.run(run_id)
        if self.router is not None:  # the due shard of the node of the run's bucket
            args["bucket"] = str(keys.bucket.number)
        delay, deadline = 0.05, time.monotonic() + RIDE_OUT
        while True:
            if self.router is not None:
                args["shard"] = self.router.shard_for(keys.record)
            try:
                reply = self.scripts.call(
                    script,
                    keys.transition([*pushes, *(extra_keys or ())]),
                    {"id": run_id, **self._common, **args},
                    [p.message for p in held],
                )
                return parse(script, reply)
            except redis.ResponseError as exc:
                # the guess of the shard's node was stale (the run's slot moved, or is
                # moving): the script touched the shard first, so it wrote nothing
                if self.router is None or NON_LOCAL not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                self.router.refresh()

    # --- transitions ----------------------------------------------------------------

    def create(
        self,
        run_id: str,
        *,
        workflow: str,
        input: str,
        digest: str,
        summary: str,
        plan: list[dict[str, Any]],
        fields: dict[str, str] | None = None,
        event: dict[str, Any] | None = None,
        outbox: Outbox | None = None,
        outbox_step: str | None = None,
    ) -> CreateReply:
        """Store a new run; ``outbox``: its first step's message, sent if the run is new."""
        return cast(
            CreateReply,
            self._call(
                "create",
                run_id,
                outbox,
                workflow=workflow,
                input=input,
                digest=digest,
                summary=summary,
                plan=plan,
                fields=fields or None,
                event=event or None,
                outbox_step=outbox_step,
            ),
        )

    def begin(self, run_id: str, step: str, epoch: int, task_id: str, worker: str) -> BeginReply:
        return cast(
            BeginReply,
            self._call("begin", run_id, step=step, epoch=epoch, task_id=task_id, worker=worker),
        )

    def complete(
        self,
        run_id: str,
        step: str,
        epoch: int,
        attempt: int,
        result: str,
        *,
        final: str | None = None,
        outbox: Outbox | None = None,
        outbox_step: str | None = None,
    ) -> CompleteReply:
        """Record a successful attempt; ``outbox``: the next step's message, sent if it is next."""
        return cast(
            CompleteReply,
            self._call(
                "complete",
                run_id,
                outbox,
                step=step,
                epoch=epoch,
                attempt=attempt,
                result=result,
                final=final,
                outbox_step=outbox_step,
            ),
        )

    def retry(
        self, run_id: str, step: str, epoch: int, attempt: int, error_type: str, error: str
    ) -> RetryReply:
        return cast(
            RetryReply,
            self._call(
                "retry",
                run_id,
                step=step,
                epoch=epoch,
                attempt=attempt,
                error_type=error_type,
                error=error,
                grace_us=us(self.settings.redrive_grace),
            ),
        )

    def fail(
        self,
        run_id: str,
        step: str,
        epoch: int,
        attempt: int,
        error_type: str,
        error: str,
        *,
        refused: bool = True,
    ) -> FailReply:
        """A non-retryable failure of the attempt: the run fails (or is cancelled).

        ``refused``: the step's service refused, so it did nothing and its undo is not
        needed (a business error); False when its effect may have happened (the
        activity returned, then something around it failed).
        """
        return cast(
            FailReply,
            self._call(
                "fail",
                run_id,
                step=step,
                epoch=epoch,
                attempt=attempt,
                error_type=error_type,
                error=error,
                refused=refused,
            ),
        )

    def gate(self, run_id: str, step: str, epoch: int, task_id: str, worker: str) -> GateReply:
        return cast(
            GateReply,
            self._call(
                "gate",
                run_id,
                step=step,
                epoch=epoch,
                task_id=task_id,
                worker=worker,
                grace_us=us(self.settings.gate_grace),
            ),
        )

    def signal(
        self,
        run_id: str,
        gate: str,
        decision: str,
        *,
        by: str = "",
        reason: str = "",
        source: str = "api",
        epoch: int | None = None,
    ) -> SignalReply:
        return cast(
            SignalReply,
            self._call(
                "signal",
                run_id,
                gate=gate,
                decision=decision,
                by=by,
                reason=reason,
                source=source,
                epoch=epoch,
            ),
        )

    def cancel(self, run_id: str, *, by: str, reason: str) -> CancelReply:
        return cast(CancelReply, self._call("cancel", run_id, by=by, reason=reason))

    def retry_now(self, run_id: str, *, by: str) -> DispatchReply:
        """A step waiting out its backoff is queued again at once, under a new epoch."""
        return cast(DispatchReply, self._call("retry_now", run_id, by=by))

    def resume(self, run_id: str, step: str, *, by: str) -> DispatchReply:
        """A failed or cancelled run runs again from ``step`` (Temporal's reset)."""
        return cast(DispatchReply, self._call("resume", run_id, step=step, by=by))

    def redrive(
        self,
        run_id: str,
        reason: str,
        worker: str | None = None,
        *,
        backlog: int = 0,
        held: Iterable[str] = (),
        queued: Iterable[str] = (),
        lost: Iterable[str] = (),
        epoch: int | None = None,
    ) -> RedriveReply:
        """The watchdog's look at a run that is due. The ids of the run's messages that
        live workers hold (``held``: prefetched, waiting for a countdown, running), that
        wait in a queue (``queued``), and that a dead worker held (``lost``); ``backlog``:
        messages waiting in a queue that could not be looked through (RabbitMQ).

        ``reason="resend"``: the message of a step that completed under ``epoch`` was
        delivered again; the next step is sent again if it still waits for its message.
        """
        s = self.settings
        return cast(
            RedriveReply,
            self._call(
                "redrive",
                run_id,
                reason=reason,
                worker=worker,
                grace_us=us(s.redrive_grace),
                backlog=backlog,
                stall_us=us(s.queue_stall_limit),
                interval_us=us(s.watchdog_interval),
                held=list(held),
                queued=list(queued),
                lost=list(lost),
                epoch=epoch,
            ),
        )

    def unsent(self, run_id: str, message_ids: list[str]) -> UnsentReply:
        """These messages of the run could not be published: the watchdog sends them again
        at its next look (without waiting for a queue's backlog)."""
        return cast(UnsentReply, self._call("unsent", run_id, messages=message_ids))

    def begin_undo(
        self, run_id: str, action: str, step: str, task_id: str, worker: str
    ) -> BeginUndoReply:
        """Claim a pending compensation before calling the service (a no-op otherwise).
        ``step``: whose undo it is (its policy's lease applies to the claim)."""
        return cast(
            BeginUndoReply,
            self._call(
                "begin_undo", run_id, action=action, step=step, task_id=task_id, worker=worker
            ),
        )

    def undone(
        self, run_id: str, action: str, claim: int, undone: bool, summary: str
    ) -> UndoneReply:
        return cast(
            UndoneReply,
            self._call(
                "undone", run_id, action=action, claim=claim, undone=undone, summary=summary
            ),
        )

    def undo_failed(
        self, run_id: str, action: str, claim: int, step: str, error_type: str, error: str
    ) -> UndoFailedReply:
        return cast(
            UndoFailedReply,
            self._call(
                "undo_failed",
                run_id,
                action=action,
                claim=claim,
                step=step,
                error_type=error_type,
                error=error,
            ),
        )

    # --- housekeeping ---------------------------------------------------------------

    def _batch(self, calls: Iterable[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """Commands ``(name, args, kwargs)`` in one pipeline: one round trip per node on a
        cluster (redis-py groups them by node), results in order."""
        batch = list(calls)

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for name, args, kwargs in batch:
                getattr(pipe, name)(*args, **kwargs)
            return pipe.execute()

        return run() if self.router is None else self.router.ride_out(run, "a batch of reads")

    def _each(self, name: str, keys: Iterable[str], *args: Any, **kwargs: Any) -> list[Any]:
        """Command ``name`` on each key (with the same further arguments), in one pipeline."""
        return self._batch((name, (key, *args), kwargs) for key in keys)

    def prune_expired(self, now_us: int, limit: int = 500) -> int:
        """Drop index entries of finished runs whose record expired (retention).

        Only entries created more than ``retention`` ago can have expired, so the
        scan is bounded; an entry whose record still exists is kept.
        """
        cutoff = now_us - us(self.settings.retention)
        final = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
        indexes = [b.status_index(s) for b in self.space.all_buckets for s in final]
        found = self._each("zrangebyscore", indexes, "-inf", cutoff, start=0, num=limit)
        old = [(index, run_id) for index, ids in zip(indexes, found, strict=True) for run_id in ids]
        if not old:
            return 0
        alive = self._each("exists", (self.space.run(r).record for _, r in old))
        gone: dict[str, list[str]] = {}
        for (index, run_id), exists in zip(old, alive, strict=True):
            if not exists:
                gone.setdefault(index, []).append(run_id)
        removed = self._batch(("zrem", (i, *g), {}) for i, g in gone.items())
        return sum(int(n) for n in removed)

    def workers_of(self, run_ids: list[str]) -> list[str | None]:
        """The worker recorded on each run (whose attempt it runs, if any)."""
        return self.fields(run_ids, "worker")

    def scheduled(self) -> list[str]:
        """Every run the watchdog will look at (all buckets' due indexes)."""
        found = self._each("zrange", (b.due for b in self.space.all_buckets), 0, -1)
        return [run_id for ids in found for run_id in ids]

    # --- what is due, on a cluster (the due shards, see lua/lib.lua: schedule) ---------

    def due_on_cluster(
        self, now_us: int, limit: int
    ) -> tuple[list[str], list[tuple[BucketKeys, str]]]:
        """The runs due now, found through the nodes' due shards: only the buckets that have
        something due are read. Returns them and the buckets they came from, each with the
        shard that named it (to be :meth:`reindex`-ed once they were handled)."""
        assert self.router is not None
        shards = self.router.shards()
        entries = self._each(
            "zrangebyscore", shards, "-inf", now_us, start=0, num=limit, withscores=True
        )
        named = {int(b): shard for shard, found in zip(shards, entries, strict=True)
                 for b, _ in found}  # fmt: skip
        if not named:
            return [], []
        buckets = [(self.space.bucket(b), named[b]) for b in sorted(named)]
        found = self._each(
            "zrangebyscore", (b.due for b, _ in buckets), "-inf", now_us, start=0, num=limit
        )
        return [run_id for ids in found for run_id in ids], buckets

    def reindex(self, buckets: list[tuple[BucketKeys, str]]) -> None:
        """Raise each bucket's entry in its node's due shard to its earliest due run now, or
        drop it when nothing is scheduled (``ZADD GT``: a transition that made it earlier
        meanwhile wins; :meth:`reindex_all` mends the rest). A bucket that moved to another
        node (a slot migration, a failover) leaves the shard that named it."""
        assert self.router is not None
        heads = self._each("zrange", (b.due for b, _ in buckets), 0, 0, withscores=True)
        updates: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for (bucket, named_in), head in zip(buckets, heads, strict=True):
            shard, member = self.router.shard_for(bucket.due), str(bucket.number)
            if head:
                updates.append(("zadd", (shard, {member: head[0][1]}), {"gt": True}))
            else:
                updates.append(("zrem", (shard, member), {}))
            if named_in != shard:
                updates.append(("zrem", (named_in, member), {}))
        self._batch(updates)

    def reindex_all(self) -> int:
        """Rebuild the due shards from every bucket (a safety net, and after a bucket moved
        to another node): each bucket with something scheduled gets its earliest time in
        the shard of the node that serves it now. Returns how many buckets that was."""
        assert self.router is not None
        buckets = self.space.all_buckets
        heads = self._each("zrange", (b.due for b in buckets), 0, 0, withscores=True)
        updates = [
            ("zadd", (self.router.shard_for(b.due), {str(b.number): head[0][1]}), {"lt": True})
            for b, head in zip(buckets, heads, strict=True)
            if head
        ]
        self._batch(updates)
        return len(updates)

    # --- reads ------------------------------------------------------------------------

    def record(self, run_id: str) -> dict[str, str]:
        """The raw run hash (empty if there is no such run)."""
        return self.client.hgetall(self.space.run(run_id).record)  # type: ignore[return-value]

    def records(self, run_ids: list[str]) -> list[dict[str, str]]:
        return self._each("hgetall", (self.space.run(r).record for r in run_ids))

    def fields(self, run_ids: list[str], field: str) -> list[str | None]:
        """One field of each run's record."""
        return self._each("hget", (self.space.run(r).record for r in run_ids), field)

    def history(self, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """All events of the run: (stream id, type, data)."""
        entries: Any = self.client.xrange(self.space.run(run_id).history)
        return [(eid, f["type"], json.loads(f["data"])) for eid, f in entries]

    def _on_node(self, key: str, read: Callable[[Any, bool], Any]) -> Any:
        """``read(client, asking)`` on the node of ``key`` (on one server: the client)."""
        if self.router is None:
            return read(self.client, False)
        return self.router.on_slot(key, read)

    def snapshot(self, run_id: str) -> tuple[dict[str, str], str]:
        """The run hash and the id of its newest event, in one round trip."""
        k = self.space.run(run_id)

        def read(client: Any, asking: bool) -> Any:
            pipe = client.pipeline(transaction=not asking)
            if asking:
                pipe.execute_command("ASKING")
            pipe.hgetall(k.record)
            pipe.xrevrange(k.history, count=1)
            return pipe.execute()[-2:]

        record, last = self._on_node(k.record, read)
        return record, last[0][0] if last else "0-0"

    def wait_settled(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """Block until the run is settled (its doorbell rang), at most ``timeout`` seconds.

        Returns how it ended (``status``, and ``result`` if completed), or None.
        """
        bell = self.space.run(run_id).settled
        outcome: Any = self.client.blmove(bell, bell, timeout, "RIGHT", "LEFT")  # type: ignore[arg-type]
        return None if outcome is None else json.loads(outcome)

    def status(self, run_id: str) -> str | None:
        """The run's status, or None if there is no such run."""
        return self.client.hget(self.space.run(run_id).record, "status")  # type: ignore[return-value]

    def wait_for_event(self, run_id: str, after: str, block_ms: int) -> str | None:
        """Block until the run's history grows past ``after``; the newest event id, or None."""
        history = self.space.run(run_id).history

        def read(client: Any, asking: bool) -> Any:
            if not asking:
                return client.xread({history: after}, block=block_ms)
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.xread({history: after}, block=block_ms)
            return pipe.execute()[-1]

        reply = self._on_node(history, read)
        return reply[0][1][-1][0] if reply else None

    def run_ids(
        self, status: str | None = None, *, retrying: bool = False, limit: int = 50
    ) -> list[str]:
        """Newest first. ``retrying``: runs waiting for the next attempt of a failed step."""
        buckets = self.space.all_buckets
        if retrying:
            indexes = [b.retrying for b in buckets]
        elif status:
            indexes = [b.status_index(status) for b in buckets]
        else:
            indexes = [i for b in buckets for i in b.status_indexes]
        return self.newest(indexes, limit)

    def newest(self, indexes: list[str], limit: int) -> list[str]:
        """The ``limit`` members with the highest scores over several zsets, newest first.

        Two rounds at most: a few of each (``limit`` shared out), then, from those that
        may hold more above the ``limit``-th best score seen, the rest above it.
        """
        if limit <= 0 or not indexes:
            return []
        few = len(indexes) <= 8
        share = limit if few else max(1, math.ceil(2 * limit / len(indexes)))
        first = self._each("zrevrange", indexes, 0, share - 1, withscores=True)
        seen = sorted((pair for found in first for pair in found), key=_score, reverse=True)
        if not few:
            floor = seen[limit - 1][1] if len(seen) >= limit else float("-inf")
            more = [
                i for i, found in zip(indexes, first, strict=True)
                if len(found) == share and found[-1][1] >= floor
            ]  # fmt: skip
            if more:
                rest = self._each(
                    "zrevrangebyscore", more, "+inf", floor, start=share, num=limit,
                    withscores=True,
                )  # fmt: skip
                seen = sorted([*seen, *(p for found in rest for p in found)], key=_score,
                              reverse=True)  # fmt: skip
        return [run_id for run_id, _ in seen[:limit]]

    def counts(self) -> dict[str, int]:
        """Runs per status, and ``retrying``: one ZCARD per bucket index, in one pipeline."""
        names = [*(s.value for s in RunStatus), "retrying"]
        keys = [
            (n, b.retrying if n == "retrying" else b.status_index(n))
            for b in self.space.all_buckets
            for n in names
        ]
        sizes = self._each("zcard", (k for _, k in keys))
        out = dict.fromkeys(names, 0)
        for (name, _), size in zip(keys, sizes, strict=True):
            out[name] += int(size)
        return out

    def metrics(self) -> dict[str, int]:
        """The workflow's event counters and histogram buckets (``lua/lib.lua``,
        count_event), summed over the buckets."""
        out: dict[str, int] = {}
        for found in self._each("hgetall", (b.metrics for b in self.space.all_buckets)):
            for field, value in found.items():
                out[field] = out.get(field, 0) + int(value)
        return out

    def companion(self, run_id: str, suffix: str) -> str:
        """The key of one of the workflow's own per-run keys."""
        return self.space.run(run_id).companion(suffix)

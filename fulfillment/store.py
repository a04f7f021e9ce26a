"""The order store: every state change of an order is one Lua script call here.

This module only marshals arguments; the rules live in ``fulfillment/lua``.
Times cross the boundary as integer microseconds of the Redis server clock.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from . import keys
from .keys import OrderKeys
from .models import Order
from .scripts import Scripts
from .settings import STEP_NAMES, Settings
from .transport import Outbox
from .workflow import COMPENSATES

US = 1_000_000


def us(seconds: float) -> int:
    return round(seconds * US)


class OrderStore:
    """Reads and atomic transitions of order records."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.scripts = Scripts(client)
        self._common = {
            "queue_grace_us": us(settings.queue_grace),
            "comp_grace_us": us(settings.compensation_grace),
            "retention_s": settings.retention,
        }
        self._policies = {}
        for step in STEP_NAMES:
            policy = settings.policy(step)
            self._policies[step] = {
                "initial_us": us(policy.initial_interval),
                "coefficient": policy.backoff_coefficient,
                "maximum_us": us(policy.maximum_interval),
                "maximum_attempts": policy.maximum_attempts,
            }
        self._policies["approval"] = {**self._policies["payment"], "maximum_attempts": 0}

    def _transition(
        self, script: str, order_id: str, outbox: Outbox | None = None, **args: Any
    ) -> dict[str, Any]:
        held = outbox or []
        pushes = [k for push in held if not push.publish for k in (push.key, *push.expire_keys)]
        if held:
            args["outbox"] = [
                {"p": p.key} if p.publish else {"n": len(p.expire_keys), "ms": p.expire_ms}
                for p in held
            ]
        return self.scripts.call(
            script,
            OrderKeys(order_id).transition(pushes),
            {"id": order_id, **self._common, **args},
            [push.message for push in held],
        )

    # --- transitions ----------------------------------------------------------------

    def create(
        self,
        order: Order,
        steps: list[str],
        needs_approval: bool,
        approval_timeout: float,
        outbox: Outbox | None = None,
    ) -> dict[str, Any]:
        """Store a new order; ``outbox``: its first step's message, sent if it is new."""
        return self._transition(
            "create",
            order.id,
            outbox,
            order=order.canonical_json(),
            digest=order.digest(),
            summary=json.dumps(order.summary()),
            total=str(order.total),
            items=len(order.items),
            steps=",".join(steps),
            needs_approval=int(needs_approval),
            approval_timeout_us=us(approval_timeout),
            threshold=str(self.settings.approval_threshold),
        )

    def begin(
        self, order_id: str, step: str, epoch: int, task_id: str, worker: str
    ) -> dict[str, Any]:
        return self._transition(
            "begin",
            order_id,
            step=step,
            epoch=epoch,
            task_id=task_id,
            worker=worker,
            lease_us=us(self.settings.lease_seconds(step)),
        )

    def complete(
        self,
        order_id: str,
        step: str,
        epoch: int,
        attempt: int,
        result: str,
        outbox: Outbox | None = None,
    ) -> dict[str, Any]:
        """Record a successful attempt; ``outbox``: the next step's message, sent if it is next."""
        return self._transition(
            "complete",
            order_id,
            outbox,
            step=step,
            epoch=epoch,
            attempt=attempt,
            result=result,
        )

    def retry(
        self,
        order_id: str,
        step: str,
        epoch: int,
        attempt: int,
        error_type: str,
        error: str,
        delay: float,
    ) -> dict[str, Any]:
        return self._transition(
            "retry",
            order_id,
            step=step,
            epoch=epoch,
            attempt=attempt,
            error_type=error_type,
            error=error,
            delay_us=us(delay),
            grace_us=us(self.settings.redrive_grace),
            max_attempts=self.settings.policy(step).maximum_attempts,
        )

    def fail(
        self, order_id: str, step: str, epoch: int, attempt: int, error_type: str, error: str
    ) -> dict[str, Any]:
        return self._transition(
            "fail",
            order_id,
            step=step,
            epoch=epoch,
            attempt=attempt,
            error_type=error_type,
            error=error,
        )

    def enter_approval(
        self, order_id: str, epoch: int, task_id: str, worker: str
    ) -> dict[str, Any]:
        return self._transition(
            "enter_approval",
            order_id,
            epoch=epoch,
            task_id=task_id,
            worker=worker,
            grace_us=us(self.settings.approval_grace),
        )

    def decide(
        self,
        order_id: str,
        decision: str,
        *,
        by: str = "",
        reason: str = "",
        source: str = "api",
        epoch: int | None = None,
    ) -> dict[str, Any]:
        return self._transition(
            "decide", order_id, decision=decision, by=by, reason=reason, source=source, epoch=epoch
        )

    def redrive(
        self,
        order_id: str,
        reason: str,
        worker: str | None = None,
        *,
        backlog: int = 0,
        alive: list[str] | None = None,
    ) -> dict[str, Any]:
        """The watchdog's look at an order that is due; ``alive``: the live workers."""
        held = [keys.held_set(w) for w in alive or ()]
        k = OrderKeys(order_id).transition()
        s = self.settings
        return self.scripts.call(
            "redrive",
            k + held,
            {
                "id": order_id,
                **self._common,
                "reason": reason,
                "worker": worker,
                "policies": self._policies,
                "grace_us": us(s.redrive_grace),
                "backlog": backlog,
                "stall_us": us(s.queue_stall_limit),
                "interval_us": us(s.watchdog_interval),
                "held_from": len(k) + 1,
            },
        )

    def begin_compensation(
        self, order_id: str, action: str, task_id: str, worker: str
    ) -> dict[str, Any]:
        """Claim a pending compensation before calling the service (a no-op otherwise)."""
        return self._transition(
            "begin_compensation",
            order_id,
            action=action,
            task_id=task_id,
            worker=worker,
            lease_us=us(self.settings.lease_seconds(COMPENSATES[action])),
        )

    def compensated(
        self, order_id: str, action: str, claim: int, undone: bool, summary: str
    ) -> dict[str, Any]:
        return self._transition(
            "compensated", order_id, action=action, claim=claim, undone=undone, summary=summary
        )

    def compensation_failed(
        self,
        order_id: str,
        action: str,
        claim: int,
        error_type: str,
        error: str,
        delay: float,
    ) -> dict[str, Any]:
        return self._transition(
            "compensation_failed",
            order_id,
            action=action,
            claim=claim,
            error_type=error_type,
            error=error,
            delay_us=us(delay),
        )

    def tick(
        self, worker: str, queues: list[str], held: list[str], limit: int = 200
    ) -> dict[str, Any]:
        """Heartbeat of ``worker`` and the messages it holds; for the lock holder: what is due."""
        s = self.settings
        return self.scripts.call(
            "tick",
            [
                keys.WORKERS,
                keys.WATCHDOG_LOCK,
                keys.LEASES,
                keys.TIMERS,
                keys.QUEUED,
                keys.held_set(worker),
                *queues,
            ],
            {
                "worker": worker,
                "lock_ttl_ms": int(max(3 * s.watchdog_interval, 1.0) * 1000),
                "dead_after_us": us(s.worker_dead_after),
                "limit": limit,
                "held": held,
            },
        )

    def prune_expired(self, now_us: int, limit: int = 500) -> int:
        """Drop index entries of finished orders whose record expired (retention).

        Only entries created more than ``retention`` ago can have expired, so the
        scan is bounded; an entry whose record still exists is kept.
        """
        cutoff = now_us - us(self.settings.retention)
        removed = 0
        for status in keys.TERMINAL:
            index = keys.status_index(status)
            ids = self.client.zrangebyscore(index, "-inf", cutoff, start=0, num=limit)
            if not ids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for order_id in ids:
                pipe.exists(OrderKeys(order_id).record)
            gone = [i for i, alive in zip(ids, pipe.execute(), strict=True) if not alive]
            if gone:
                removed += int(self.client.zrem(index, *gone))
        return removed

    def forget_dead_workers(self, older_than_us: int) -> None:
        """Drop heartbeats older than ``older_than_us`` (a worker that came back is kept)."""
        self.client.zremrangebyscore(keys.WORKERS, "-inf", older_than_us)

    def leave(self, worker: str) -> None:
        """A worker shutting down cleanly stops counting as alive at once."""
        self.client.zrem(keys.WORKERS, worker)
        self.client.delete(keys.held_set(worker))
        lock = self.client.get(keys.WATCHDOG_LOCK)
        if lock == worker:
            self.client.delete(keys.WATCHDOG_LOCK)

    # --- reads --------------------------------------------------------------------------

    def record(self, order_id: str) -> dict[str, str]:
        """The raw order hash (empty if there is no such order)."""
        return self.client.hgetall(OrderKeys(order_id).record)

    def records(self, order_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hgetall(OrderKeys(order_id).record)
        return pipe.execute()

    def history(self, order_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """All events of the order: (stream id, type, data)."""
        entries = self.client.xrange(OrderKeys(order_id).history)
        return [(eid, f["type"], json.loads(f["data"])) for eid, f in entries]

    def snapshot(self, order_id: str) -> tuple[dict[str, str], str]:
        """The order hash and the id of its newest event, in one round trip."""
        k = OrderKeys(order_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(k.record)
        pipe.xrevrange(k.history, count=1)
        record, last = pipe.execute()
        return record, last[0][0] if last else "0-0"

    def wait_settled(self, order_id: str, timeout: float) -> dict[str, Any] | None:
        """Block until the order is settled (its doorbell rang), at most ``timeout`` seconds.

        Returns how it ended (``status``, and ``result`` if completed), or None.
        """
        bell = OrderKeys(order_id).settled
        outcome = self.client.blmove(bell, bell, timeout, "RIGHT", "LEFT")
        return None if outcome is None else json.loads(outcome)

    def status(self, order_id: str) -> str | None:
        """The order's status, or None if there is no such order."""
        return self.client.hget(OrderKeys(order_id).record, "status")

    def wait_for_event(self, order_id: str, after: str, block_ms: int) -> str | None:
        """Block until the order's history grows past ``after``; the newest event id, or None."""
        reply = self.client.xread({OrderKeys(order_id).history: after}, block=block_ms)
        return reply[0][1][-1][0] if reply else None

    def order_ids(
        self, status: str | None = None, retrying: bool = False, limit: int = 50
    ) -> list[str]:
        """Newest first. ``retrying``: orders waiting for the next attempt of a failed step."""
        if retrying:
            return self.client.zrevrange(keys.RETRYING, 0, limit - 1)
        if status:
            return self.client.zrevrange(keys.status_index(status), 0, limit - 1)
        pipe = self.client.pipeline(transaction=False)
        for index in keys.STATUS_INDEXES:
            pipe.zrevrange(index, 0, limit - 1, withscores=True)
        merged = [pair for result in pipe.execute() for pair in result]
        merged.sort(key=lambda pair: pair[1], reverse=True)
        return [order_id for order_id, _ in merged[:limit]]

    def ledger(self, order_id: str) -> dict[str, str]:
        """The simulated services' ledger of the order (charges, reservation, shipment)."""
        return self.client.hgetall(OrderKeys(order_id).ledger)

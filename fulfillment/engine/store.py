"""The run store: every state change of a run is one Lua script call here.

This module only marshals arguments and types the replies (:class:`Verdict`); the
rules live in ``fulfillment/engine/lua``. Times cross the boundary as integer
microseconds of the Redis server clock.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from .keys import KeySpace, RunStatus, held_set
from .scripts import Scripts
from .settings import EngineSettings
from .transport import Outbox
from .verdicts import US, Verdict


def us(seconds: float) -> int:
    return round(seconds * US)


class RunStore:
    """Atomic transitions and reads of the runs of one workflow."""

    def __init__(
        self, client: redis.Redis, scripts: Scripts, space: KeySpace, settings: EngineSettings
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.space = space
        self.settings = settings
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
    ) -> Verdict:
        held = outbox or []
        pushes = [k for p in held if not p.publish for k in (p.key, *p.expire_keys)]
        if held:
            args["outbox"] = [
                {"p": p.key} if p.publish else {"n": len(p.expire_keys), "ms": p.expire_ms}
                for p in held
            ]
        reply = self.scripts.call(
            script,
            self.space.run(run_id).transition([*pushes, *(extra_keys or ())]),
            {"id": run_id, **self._common, **args},
            [p.message for p in held],
        )
        return Verdict.parse(reply)

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
    ) -> Verdict:
        """Store a new run; ``outbox``: its first step's message, sent if the run is new."""
        return self._call(
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
        )

    def begin(self, run_id: str, step: str, epoch: int, task_id: str, worker: str) -> Verdict:
        return self._call("begin", run_id, step=step, epoch=epoch, task_id=task_id, worker=worker)

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
    ) -> Verdict:
        """Record a successful attempt; ``outbox``: the next step's message, sent if it is next."""
        return self._call(
            "complete",
            run_id,
            outbox,
            step=step,
            epoch=epoch,
            attempt=attempt,
            result=result,
            final=final,
            outbox_step=outbox_step,
        )

    def retry(
        self, run_id: str, step: str, epoch: int, attempt: int, error_type: str, error: str
    ) -> Verdict:
        return self._call(
            "retry",
            run_id,
            step=step,
            epoch=epoch,
            attempt=attempt,
            error_type=error_type,
            error=error,
            grace_us=us(self.settings.redrive_grace),
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
    ) -> Verdict:
        """A non-retryable failure of the attempt: the run fails (or is cancelled).

        ``refused``: the step's service refused, so it did nothing and its undo is not
        needed (a business error); False when its effect may have happened (the
        activity returned, then something around it failed).
        """
        return self._call(
            "fail",
            run_id,
            step=step,
            epoch=epoch,
            attempt=attempt,
            error_type=error_type,
            error=error,
            refused=refused,
        )

    def gate(self, run_id: str, step: str, epoch: int, task_id: str, worker: str) -> Verdict:
        return self._call(
            "gate",
            run_id,
            step=step,
            epoch=epoch,
            task_id=task_id,
            worker=worker,
            grace_us=us(self.settings.approval_grace),
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
    ) -> Verdict:
        return self._call(
            "signal",
            run_id,
            gate=gate,
            decision=decision,
            by=by,
            reason=reason,
            source=source,
            epoch=epoch,
        )

    def cancel(self, run_id: str, *, by: str, reason: str) -> Verdict:
        return self._call("cancel", run_id, by=by, reason=reason)

    def retry_now(self, run_id: str, *, by: str) -> Verdict:
        """A step waiting out its backoff is queued again at once, under a new epoch."""
        return self._call("retry_now", run_id, by=by)

    def resume(self, run_id: str, step: str, *, by: str) -> Verdict:
        """A failed or cancelled run runs again from ``step`` (Temporal's reset)."""
        return self._call("resume", run_id, step=step, by=by)

    def redrive(
        self,
        run_id: str,
        reason: str,
        worker: str | None = None,
        *,
        backlog: int = 0,
        alive: tuple[str, ...] | list[str] = (),
        epoch: int | None = None,
    ) -> Verdict:
        """The watchdog's look at a run that is due; ``alive``: the live workers.

        ``reason="resend"``: the message of a step that completed under ``epoch`` was
        delivered again; the next step is sent again if it still waits for its message.
        """
        held = [held_set(w) for w in alive]
        s = self.settings
        first_held = len(self.space.run(run_id).transition()) + 1
        return self._call(
            "redrive",
            run_id,
            extra_keys=held,
            reason=reason,
            worker=worker,
            grace_us=us(s.redrive_grace),
            backlog=backlog,
            stall_us=us(s.queue_stall_limit),
            interval_us=us(s.watchdog_interval),
            held_from=first_held,
            epoch=epoch,
        )

    def unsent(self, run_id: str, message_ids: list[str]) -> Verdict:
        """These messages of the run could not be published: the watchdog sends them again
        at its next look (without waiting for a queue's backlog)."""
        return self._call("unsent", run_id, messages=message_ids)

    def begin_undo(self, run_id: str, action: str, step: str, task_id: str, worker: str) -> Verdict:
        """Claim a pending compensation before calling the service (a no-op otherwise).
        ``step``: whose undo it is (its policy's lease applies to the claim)."""
        return self._call(
            "begin_undo", run_id, action=action, step=step, task_id=task_id, worker=worker
        )

    def undone(self, run_id: str, action: str, claim: int, undone: bool, summary: str) -> Verdict:
        return self._call(
            "undone", run_id, action=action, claim=claim, undone=undone, summary=summary
        )

    def undo_failed(
        self, run_id: str, action: str, claim: int, step: str, error_type: str, error: str
    ) -> Verdict:
        return self._call(
            "undo_failed",
            run_id,
            action=action,
            claim=claim,
            step=step,
            error_type=error_type,
            error=error,
        )

    # --- housekeeping ---------------------------------------------------------------

    def prune_expired(self, now_us: int, limit: int = 500) -> int:
        """Drop index entries of finished runs whose record expired (retention).

        Only entries created more than ``retention`` ago can have expired, so the
        scan is bounded; an entry whose record still exists is kept.
        """
        cutoff = now_us - us(self.settings.retention)
        removed = 0
        for status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            index = self.space.status_index(status)
            ids: list[str] = self.client.zrangebyscore(index, "-inf", cutoff, start=0, num=limit)  # type: ignore[assignment]
            if not ids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for run_id in ids:
                pipe.exists(self.space.run(run_id).record)
            gone = [i for i, alive in zip(ids, pipe.execute(), strict=True) if not alive]
            if gone:
                removed += int(self.client.zrem(index, *gone))
        return removed

    def workers_of(self, run_ids: list[str]) -> list[str | None]:
        """The worker recorded on each run (whose attempt it runs, if any)."""
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(self.space.run(run_id).record, "worker")
        return pipe.execute()

    # --- reads ------------------------------------------------------------------------

    def record(self, run_id: str) -> dict[str, str]:
        """The raw run hash (empty if there is no such run)."""
        return self.client.hgetall(self.space.run(run_id).record)  # type: ignore[return-value]

    def records(self, run_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(self.space.run(run_id).record)
        return pipe.execute()

    def history(self, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """All events of the run: (stream id, type, data)."""
        entries: Any = self.client.xrange(self.space.run(run_id).history)
        return [(eid, f["type"], json.loads(f["data"])) for eid, f in entries]

    def snapshot(self, run_id: str) -> tuple[dict[str, str], str]:
        """The run hash and the id of its newest event, in one round trip."""
        k = self.space.run(run_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(k.record)
        pipe.xrevrange(k.history, count=1)
        record, last = pipe.execute()
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
        reply: Any = self.client.xread({self.space.run(run_id).history: after}, block=block_ms)
        return reply[0][1][-1][0] if reply else None

    def run_ids(
        self, status: str | None = None, *, retrying: bool = False, limit: int = 50
    ) -> list[str]:
        """Newest first. ``retrying``: runs waiting for the next attempt of a failed step."""
        s = self.space
        if retrying:
            return self.client.zrevrange(s.retrying, 0, limit - 1)  # type: ignore[return-value]
        if status:
            return self.client.zrevrange(s.status_index(status), 0, limit - 1)  # type: ignore[return-value]
        pipe = self.client.pipeline(transaction=False)
        for index in s.status_indexes:
            pipe.zrevrange(index, 0, limit - 1, withscores=True)
        merged = [pair for result in pipe.execute() for pair in result]
        merged.sort(key=lambda pair: pair[1], reverse=True)
        return [run_id for run_id, _ in merged[:limit]]

    def companion(self, run_id: str, suffix: str) -> str:
        """The key of one of the workflow's own per-run keys."""
        return self.space.run(run_id).companion(suffix)

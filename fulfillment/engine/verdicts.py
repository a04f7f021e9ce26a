"""Typed script replies: every reply of a transition script becomes one :class:`Verdict`.

The scripts answer with a JSON object whose ``v`` names the outcome; it is parsed
here, once, into a :class:`Kind` and typed fields. Nothing else compares reply
strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

US = 1_000_000


class Kind(StrEnum):
    """What a transition did (or why it did nothing)."""

    # a step's attempt
    RUN = "run"  # start the attempt
    DONE = "done"  # the step already completed
    BUSY = "busy"  # another attempt holds the lease
    STALE = "stale"  # the message or result is not the live one
    FINISHED = "finished"  # the run is terminal
    MISSING = "missing"  # no such run
    NEXT = "next"  # the step completed; the run moved to the next step
    COMPLETED = "completed"  # the run completed
    FAILED = "failed"  # the run failed
    CANCELLED = "cancelled"  # the run was cancelled
    RETRY = "retry"  # the attempt failed; the step is retried later
    # creation
    CREATED = "created"
    EXISTS = "exists"  # the same run again: nothing to do
    CONFLICT = "conflict"  # the id is taken by a different input
    # gates, signals, cancel
    WAITING = "waiting"  # the run waits at a gate
    DISPATCH = "dispatch"  # send the run's step (approved, or re-driven)
    RECORDED = "recorded"  # a decision before the run reached its gate
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    EARLY = "early"  # a timeout (or an undo) that came too early
    DECIDED = "decided"  # the gate was already decided
    NOT_REQUIRED = "not_required"  # the gate is not in the run's plan
    CANCEL_REQUESTED = "cancel_requested"
    # the watchdog and compensations
    COMPENSATE = "compensate"  # send the compensations in `send`
    NOOP = "noop"
    OK = "ok"


#: replies saying "this message is not the live one": a duplicate or superseded message
SKIPS = frozenset({Kind.BUSY, Kind.STALE, Kind.FINISHED, Kind.MISSING, Kind.NOOP, Kind.EARLY})


@dataclass(frozen=True, slots=True)
class Verdict:
    """One script reply, typed."""

    kind: Kind
    step: str | None = None
    epoch: int | None = None
    attempt: int | None = None
    claim: int | None = None
    #: the step's round: 1, then one more each time a resumed run does it again
    round: int = 1
    #: the Celery task id of an attempt that was presumed lost (for Flower)
    lost_task: str | None = None
    input: str | None = None
    result: str | None = None
    results: dict[str, str] = field(default_factory=dict)
    #: the attempt is of the run's last step (``results`` holds the others' results)
    last: bool = False
    reason: str = ""
    status: str | None = None
    decision: str | None = None
    by: str | None = None
    gate: str | None = None
    summary: str | None = None
    #: the run's plan (its step names), where the sender needs it to build a chain
    plan: tuple[str, ...] = ()
    #: compensations to send now: (action, message number)
    send: tuple[tuple[str, int], ...] = ()
    #: compensations the run has to do (action names, in the order they run)
    compensations: tuple[str, ...] = ()
    #: the run failed or was cancelled and undoes its effects first (status compensating)
    compensating: bool = False
    #: the step's policy in the run's plan (JSON), for an attempt that starts
    policy: str | None = None
    #: the run's own step time limits (seconds, by step), where they differ from the
    #: deployment's: for the messages the sender builds
    limits: dict[str, float] = field(default_factory=dict)
    countdown: float = 0.0
    remaining: float = 0.0
    deadline_us: int | None = None
    next_at_us: int | None = None
    delay: float = 0.0
    #: the next step must be sent by the sender (the outbox did not hold it)
    dispatch: bool = False
    replay: bool = False
    open: int = 0

    @classmethod
    def parse(cls, reply: dict[str, Any]) -> Verdict:
        """The typed form of a script's JSON reply."""
        send = tuple((str(s["action"]), int(s["n"])) for s in _list(reply.get("send")))
        results = reply.get("results")
        limits = reply.get("limits")
        return cls(
            kind=Kind(reply["v"]),
            step=reply.get("step"),
            epoch=_int(reply.get("epoch")),
            attempt=_int(reply.get("attempt")),
            claim=_int(reply.get("claim")),
            round=int(reply.get("round") or 1),
            lost_task=reply.get("lost_task") or None,
            input=reply.get("input"),
            result=reply.get("result"),
            results=results if isinstance(results, dict) else {},
            last=bool(reply.get("last")),
            reason=reply.get("reason") or "",
            status=reply.get("status"),
            decision=reply.get("decision") or None,
            by=reply.get("by") or None,
            gate=reply.get("gate") or None,
            summary=reply.get("summary"),
            plan=tuple(_csv(reply.get("steps"))),
            send=send,
            compensations=tuple(_names(reply.get("compensations"))),
            compensating=bool(reply.get("compensating")),
            policy=reply.get("policy"),
            limits=json.loads(limits) if isinstance(limits, str) and limits else {},
            countdown=int(reply.get("countdown_us") or 0) / US,
            remaining=int(reply.get("remaining_us") or 0) / US,
            deadline_us=_int(reply.get("deadline")),
            next_at_us=_int(reply.get("next_at")),
            delay=int(reply.get("delay_us") or 0) / US,
            dispatch=bool(reply.get("dispatch")),
            replay=bool(reply.get("replay")),
            open=int(reply.get("remaining") or 0) if reply["v"] == "ok" else 0,
        )

    @property
    def skipped(self) -> bool:
        """The message was not the live one (a duplicate, superseded, or for a finished run)."""
        return self.kind in SKIPS

    def describe(self) -> str:
        """``skipped (stale: superseded by epoch 3)``: what a task returns when it did nothing."""
        why = self.reason or self.status or ""
        return f"skipped ({self.kind.value}{': ' + why if why else ''})"

    @property
    def summary_dict(self) -> dict[str, Any]:
        return json.loads(self.summary) if self.summary else {}


@dataclass(frozen=True, slots=True)
class Tick:
    """The reply of ``tick.lua``: a heartbeat, and for the watchdog's lock holder what is due."""

    leader: bool
    now_us: int = 0
    backlog: int = 0
    #: per workflow (in registration order): run ids whose schedule is due
    due: tuple[tuple[str, ...], ...] = ()
    alive: tuple[str, ...] = ()
    dead: frozenset[str] = frozenset()
    #: per workflow: every run in its due zset (read only when a worker is dead)
    scheduled: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def parse(cls, reply: dict[str, Any]) -> Tick:
        if not reply.get("leader"):
            return cls(leader=False)
        return cls(
            leader=True,
            now_us=int(reply["now"]),
            backlog=int(reply["backlog"]),
            due=tuple(tuple(_list(ids)) for ids in _list(reply.get("due"))),
            alive=tuple(_list(reply.get("alive"))),
            dead=frozenset(_list(reply.get("dead"))),
            scheduled=tuple(tuple(_list(ids)) for ids in _list(reply.get("scheduled"))),
        )


def _list(value: Any) -> list[Any]:
    """Lua's cjson encodes an empty table as ``{}``: read it as an empty list."""
    return value if isinstance(value, list) else []


def _csv(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


def _names(value: Any) -> list[str]:
    """A list of names: a JSON array, or (in an event's data) comma-joined text."""
    return [str(v) for v in value] if isinstance(value, list) else _csv(value)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)

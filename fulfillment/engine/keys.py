"""Redis key layout of the engine.

Each workflow has a namespace (``fulfillment`` for the order workflow,
``fulfillment:<name>`` by default). Every key of one run carries the hash tag
``{<run id>}``, so a run's record, history, doorbell and the workflow's own
companion keys (the order services' ledger) live in one Redis Cluster slot. The
schedule zsets and status indexes are per workflow; the workers' heartbeats, the
watchdog lock and the held-message sets are shared by every workflow of a
deployment (prefix ``fulfillment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

PREFIX = "fulfillment"
WORKERS = f"{PREFIX}:workers"  # zset: worker id -> last heartbeat
WATCHDOG_LOCK = f"{PREFIX}:watchdog:lock"


class RunStatus(StrEnum):
    """Where a run is. ``waiting``: it waits at a gate for a human signal.

    ``compensating``: its failure or cancel was accepted and it undoes its effects;
    it becomes ``failed`` or ``cancelled`` only once every undo is done.
    """

    PENDING = "pending"
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"

    @property
    def finished(self) -> bool:
        """Final: completed, failed or cancelled (nothing more will happen)."""
        return self in TERMINAL

    @property
    def ended(self) -> bool:
        """No step runs any more: final, or compensating."""
        return self in TERMINAL or self is RunStatus.COMPENSATING


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def held_set(worker: str) -> str:
    """Set of the message ids ``worker`` holds (its heartbeat writes it; it expires with it)."""
    return f"{PREFIX}:held:{worker}"


def message_id(run_id: str, name: str, number: int) -> str:
    """The Celery task id of a step's (``number``: epoch) or compensation's message.

    Deterministic, so the watchdog can tell whether the message a run waits for is
    held by a live worker; and readable in Flower. ``lua/lib.lua`` builds the same.
    """
    return f"{run_id}:{name}:{number}"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """The keys of one workflow."""

    namespace: str
    #: the last part of a run record's key (the workflow's name)
    record_name: str
    #: the workflow's own per-run keys (suffixes), kept and expired with the run
    companions: tuple[str, ...] = ()

    @property
    def due(self) -> str:
        """zset: run id -> when the watchdog looks at it next.

        The end of a running attempt's lease, when a queued step's message counts as
        late, a retry's time, a gate's deadline, a compensation's next look.
        """
        return f"{self.namespace}:due"

    @property
    def retrying(self) -> str:
        """zset: run id -> when it started waiting for the next attempt of a failed step."""
        return f"{self.namespace}:retrying"

    @property
    def metrics(self) -> str:
        """hash: counters and histogram buckets of the workflow's events (``lua/lib.lua``)."""
        return f"{self.namespace}:metrics"

    def status_index(self, status: str) -> str:
        """zset of the runs in ``status`` (score: creation time)."""
        return f"{self.namespace}:status:{status}"

    @property
    def status_indexes(self) -> tuple[str, ...]:
        return tuple(self.status_index(s) for s in RunStatus)

    def run(self, run_id: str) -> RunKeys:
        return RunKeys(self, run_id)


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The keys of one run, in the order the transition scripts expect them."""

    space: KeySpace
    run_id: str

    def _key(self, suffix: str) -> str:
        return f"{self.space.namespace}:{{{self.run_id}}}:{suffix}"

    @property
    def record(self) -> str:
        return self._key(self.space.record_name)

    @property
    def history(self) -> str:
        return self._key("history")

    @property
    def settled(self) -> str:
        """The doorbell: a list that gets one element once the run is settled."""
        return self._key("settled")

    def companion(self, suffix: str) -> str:
        return self._key(suffix)

    @property
    def companions(self) -> list[str]:
        return [self._key(c) for c in self.space.companions]

    def transition(self, extra: list[str] | None = None) -> list[str]:
        """KEYS of every run transition script (``lua/lib.lua``); ``extra`` follow them."""
        s = self.space
        return [
            self.record,
            self.history,
            self.settled,
            s.due,
            s.retrying,
            *s.status_indexes,
            s.metrics,
            *self.companions,
            *(extra or ()),
        ]

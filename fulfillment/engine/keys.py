"""Redis key layout of the engine.

Every key of one run and the indexes of its bucket share one hash tag, so that every
transition script touches one Redis Cluster slot:

On one Redis server (one bucket)::

    <ns>:{<run id>}:<record name>     hash    the run's record (state, plan, results)
    <ns>:{<run id>}:history           stream  its history, one event per change
    <ns>:{<run id>}:settled           list    its doorbell: one element once it is settled
    <ns>:{<run id>}:<companion>       any     the workflow's own per-run keys (a ledger)
    <ns>:due                          zset    run id -> when the watchdog looks at it next
    <ns>:retrying                     zset    runs waiting out a retry's backoff
    <ns>:status:<status>              zset    runs in that status (score: creation time)
    <ns>:metrics                      hash    event counters and histogram buckets

On a cluster, a run belongs to bucket ``crc32(run id) % buckets`` (a fixed number,
``FULFILLMENT_CLUSTER_BUCKETS``, recorded in the store at first use), and the tag is
the bucket's: ``<ns>:{b<bucket>}:<run id>:<suffix>`` for the run, ``<ns>:{b<bucket>}:due``
(and the others) for the bucket's indexes. Buckets are spread over the cluster's slots
by the hash of their tag; resharding moves whole buckets.

``<ns>`` is the workflow's namespace (``<deployment ns>:<workflow>``, or the
workflow's own). Keys shared by every workflow of a deployment, under its namespace
(``FULFILLMENT_KEY_NAMESPACE``, ``fulfillment`` by default), each group in a slot of
its own (:class:`SharedKeys`):

    <dns>:{watchdog}:workers          zset    worker id -> last heartbeat
    <dns>:{watchdog}:lock             string  the worker that runs the watchdog
    <dns>:{watchdog}:held:<worker>    set     messages (task ids, t:<delivery_tag>) a
                                              worker holds; expires with it
    <dns>:{watchdog}:orphan-cursor    string  where the look for orphans goes on
    <dns>:{due-<i>}:shard             zset    on a cluster: bucket -> its earliest due
                                              time, for the buckets of one node
    <dns>:{layout}                    hash    the store's layout (buckets)
    <dns>:dead-letters                stream  refused messages (deadletter.py)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum

#: the deployment's key namespace unless configured otherwise
NAMESPACE = "fulfillment"
#: how many candidate due shards there are (a cluster's per-node index of due buckets)
DUE_SHARD_CANDIDATES = 256


@dataclass(frozen=True, slots=True)
class SharedKeys:
    """The keys every workflow of a deployment shares, under its ``namespace``."""

    namespace: str = NAMESPACE

    @property
    def workers(self) -> str:
        """zset: worker id -> its last heartbeat (server microseconds)."""
        return f"{self.namespace}:{{watchdog}}:workers"

    @property
    def watchdog_lock(self) -> str:
        return f"{self.namespace}:{{watchdog}}:lock"

    @property
    def orphan_cursor(self) -> str:
        return f"{self.namespace}:{{watchdog}}:orphan-cursor"

    def held(self, worker: str) -> str:
        """Set of the message ids ``worker`` holds (its heartbeat writes it; it expires
        with it)."""
        return f"{self.namespace}:{{watchdog}}:held:{worker}"

    @property
    def layout(self) -> str:
        return f"{self.namespace}:{{layout}}"

    @property
    def dead_letters(self) -> str:
        return f"{self.namespace}:dead-letters"

    @property
    def due_shards(self) -> tuple[str, ...]:
        """The candidate keys of the due shards; a node's shard is the first of them in a
        slot it serves (:class:`~fulfillment.engine.cluster.Router`)."""
        return tuple(f"{self.namespace}:{{due-{i}}}:shard" for i in range(DUE_SHARD_CANDIDATES))


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
    #: 1 on one Redis server; a cluster's fixed number of buckets
    buckets: int = 1

    def bucket_of(self, run_id: str) -> int:
        return 0 if self.buckets == 1 else zlib.crc32(run_id.encode()) % self.buckets

    def bucket(self, number: int) -> BucketKeys:
        """The indexes of bucket ``number``."""
        return BucketKeys(self, number)

    @property
    def all_buckets(self) -> list[BucketKeys]:
        return [BucketKeys(self, b) for b in range(self.buckets)]

    # the indexes of the one bucket of a single server (the fan-out reads use buckets)
    @property
    def due(self) -> str:
        return self.bucket(0).due

    @property
    def retrying(self) -> str:
        return self.bucket(0).retrying

    @property
    def metrics(self) -> str:
        return self.bucket(0).metrics

    def status_index(self, status: str) -> str:
        return self.bucket(0).status_index(status)

    @property
    def status_indexes(self) -> tuple[str, ...]:
        return self.bucket(0).status_indexes

    def run(self, run_id: str) -> RunKeys:
        return RunKeys(self, run_id)


@dataclass(frozen=True, slots=True)
class BucketKeys:
    """The indexes of one bucket: in its slot, with the runs that belong to it."""

    space: KeySpace
    number: int

    @property
    def tag(self) -> str:
        return f"b{self.number}"

    def _key(self, suffix: str) -> str:
        if self.space.buckets == 1:
            return f"{self.space.namespace}:{suffix}"
        return f"{self.space.namespace}:{{{self.tag}}}:{suffix}"

    @property
    def due(self) -> str:
        """zset: run id -> when the watchdog looks at it next.

        The end of a running attempt's lease, when a queued step's message counts as
        late, a retry's time, a gate's deadline, a compensation's next look.
        """
        return self._key("due")

    @property
    def retrying(self) -> str:
        """zset: run id -> when it started waiting for the next attempt of a failed step."""
        return self._key("retrying")

    @property
    def metrics(self) -> str:
        """hash: counters and histogram buckets of the workflow's events (``lua/lib.lua``)."""
        return self._key("metrics")

    def status_index(self, status: str) -> str:
        """zset of the runs in ``status`` (score: creation time)."""
        return self._key(f"status:{status}")

    @property
    def status_indexes(self) -> tuple[str, ...]:
        return tuple(self.status_index(s) for s in RunStatus)


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The keys of one run, in the order the transition scripts expect them."""

    space: KeySpace
    run_id: str

    @property
    def bucket(self) -> BucketKeys:
        return self.space.bucket(self.space.bucket_of(self.run_id))

    def _key(self, suffix: str) -> str:
        if self.space.buckets == 1:
            return f"{self.space.namespace}:{{{self.run_id}}}:{suffix}"
        return f"{self.space.namespace}:{{{self.bucket.tag}}}:{self.run_id}:{suffix}"

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
        b = self.bucket
        return [
            self.record,
            self.history,
            self.settled,
            b.due,
            b.retrying,
            *b.status_indexes,
            b.metrics,
            *self.companions,
            *(extra or ()),
        ]

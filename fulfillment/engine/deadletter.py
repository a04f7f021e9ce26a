"""Dead letters: messages a worker refused, kept for inspection, bounded.

A refused message (:mod:`fulfillment.engine.intake`) is acknowledged, so it never
comes back, and kept here: a Redis stream (``<namespace>:dead-letters`` on the run
store's server, :class:`~fulfillment.engine.keys.SharedKeys`) capped at
``FULFILLMENT_DEAD_LETTER_LIMIT`` entries (the oldest go first), each with why it was
refused, the task and its id if known, where it came from, the worker, and its
payload (at most ``PAYLOAD_LIMIT`` characters; digit runs that look like a card number
masked). ``fulfillment dead-letters`` lists, shows and
drops them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .keys import SharedKeys

log = logging.getLogger(__name__)

#: characters of a refused payload that are kept
PAYLOAD_LIMIT = 16 * 1024
_CARDLIKE = re.compile(r"(?<!\d)(?:\d[ -]?){9,15}(\d{4})(?!\d)")


def mask(text: str) -> str:
    """``text`` with every run of 13-19 digits (spaces or dashes between) masked but its
    last four: what looks like a card number is never kept or logged in clear."""
    return _CARDLIKE.sub(lambda m: "*" * 8 + m.group(1), text)


@dataclass(frozen=True)
class DeadLetter:
    """One refused message."""

    id: str
    at: datetime
    reason: str
    source: str  # transport (the raw payload) | consumer (a task message)
    task: str | None
    task_id: str | None
    queue: str | None
    worker: str | None
    payload: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": self.at.isoformat(), "reason": self.reason,
            "source": self.source, "task": self.task, "task_id": self.task_id,
            "queue": self.queue, "worker": self.worker, "payload": self.payload,
        }  # fmt: skip


def _text(payload: bytes | str | None) -> str:
    if payload is None:
        return ""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    return mask(payload[:PAYLOAD_LIMIT])


class DeadLetters:
    """The dead letters of one deployment (its run store's Redis)."""

    def __init__(
        self, client: redis.Redis, limit: int = 1000, keys: SharedKeys | None = None
    ) -> None:
        self.client = client
        self.limit = limit
        #: the stream they are kept in
        self.key = (keys or SharedKeys()).dead_letters

    def add(
        self,
        reason: str,
        payload: bytes | str | None,
        *,
        source: str,
        task: str | None = None,
        task_id: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
    ) -> str | None:
        """Keep one refused message; its id, or None if Redis did not take it (then the
        WARNING line the caller logs is all that is left of it)."""
        fields = {
            "reason": mask(reason)[:1000], "source": source, "task": task or "",
            "task_id": task_id or "", "queue": queue or "", "worker": worker or "",
            "payload": _text(payload), "at_ms": str(int(time.time() * 1000)),
        }  # fmt: skip
        try:
            return str(
                self.client.xadd(self.key, fields, maxlen=self.limit, approximate=False)  # type: ignore[arg-type]
            )
        except redis.RedisError as exc:
            log.debug("dead letter not kept: %r", exc)
            return None

    def list(self, count: int = 50) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""
        entries: Any = self.client.xrevrange(self.key, count=count)
        return [self._letter(eid, f) for eid, f in entries]

    def get(self, letter_id: str) -> DeadLetter | None:
        entries: Any = self.client.xrange(self.key, letter_id, letter_id)
        return self._letter(*entries[0]) if entries else None

    def count(self) -> int:
        return int(self.client.xlen(self.key))

    def drop(self, *letter_ids: str) -> int:
        """Drop these dead letters; how many there were."""
        return int(self.client.xdel(self.key, *letter_ids)) if letter_ids else 0

    def drop_all(self) -> int:
        """Drop every dead letter; how many there were."""
        n = self.count()
        self.client.delete(self.key)
        return n

    @staticmethod
    def _letter(entry_id: str, f: dict[str, str]) -> DeadLetter:
        at_ms = int(f.get("at_ms") or entry_id.split("-", 1)[0])
        return DeadLetter(
            id=entry_id,
            at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
            reason=f.get("reason", ""),
            source=f.get("source", ""),
            task=f.get("task") or None,
            task_id=f.get("task_id") or None,
            queue=f.get("queue") or None,
            worker=f.get("worker") or None,
            payload=f.get("payload", ""),
        )


__all__ = ["DeadLetter", "DeadLetters", "mask"]

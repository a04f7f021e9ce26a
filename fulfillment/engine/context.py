"""What an activity knows about its attempt (Temporal's ``activity.info()``).

An effect kept in Redis is written with a fenced script (``scripts.fenced_script``):
the script gets the run's record key (:attr:`ActivityContext.record_key`) among its
keys and the caller's token (``ctx.token.as_json()``) in its argument, and asks
``stale_attempt(record_key, token)`` (``stale_claim`` for an undo) before it writes.
Keys of the workflow's own per run (``Workflow(companions=("effects",))``) are
:meth:`ActivityContext.companion`; :attr:`ActivityContext.redis` is the engine's client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fencing import AttemptToken, UndoToken
from .keys import RunKeys


@dataclass(frozen=True, slots=True)
class _RunContext:
    run_id: str
    input: Any
    task_id: str
    worker: str
    #: the run's keys (record, history, companions)
    keys: RunKeys
    #: the engine's Redis client (the store's server)
    redis: Any

    @property
    def record_key(self) -> str:
        """The run's record: what a fenced script checks the token against."""
        return self.keys.record

    def companion(self, suffix: str) -> str:
        """The key of one of the workflow's own per-run keys (``Workflow(companions=...)``)."""
        if suffix not in self.keys.space.companions:
            raise KeyError(f"{suffix!r} is not a companion key of the workflow")
        return self.keys.companion(suffix)


@dataclass(frozen=True, slots=True)
class ActivityContext(_RunContext):
    """Passed to every step's activity.

    ``token`` goes with every call to an external service (its fencing token and
    idempotency key); ``input`` is the run's input (the workflow's input model).
    """

    step: str
    token: AttemptToken

    @property
    def attempt(self) -> int:
        return self.token.attempt

    @property
    def epoch(self) -> int:
        return self.token.epoch


@dataclass(frozen=True, slots=True)
class UndoContext(_RunContext):
    """Passed to every undo (compensation) activity; ``step`` is the step it undoes."""

    action: str
    step: str
    token: UndoToken

    @property
    def claim(self) -> int:
        return self.token.claim

"""What an activity knows about its attempt (Temporal's ``activity.info()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fencing import AttemptToken, UndoToken


@dataclass(frozen=True, slots=True)
class ActivityContext:
    """Passed to every step's activity.

    ``token`` goes with every call to an external service (its fencing token and
    idempotency key); ``input`` is the run's input (the workflow's input model).
    """

    run_id: str
    step: str
    input: Any
    token: AttemptToken
    task_id: str
    worker: str

    @property
    def attempt(self) -> int:
        return self.token.attempt

    @property
    def epoch(self) -> int:
        return self.token.epoch


@dataclass(frozen=True, slots=True)
class UndoContext:
    """Passed to every undo (compensation) activity."""

    run_id: str
    action: str
    step: str
    input: Any
    token: UndoToken
    task_id: str
    worker: str

    @property
    def claim(self) -> int:
        return self.token.claim

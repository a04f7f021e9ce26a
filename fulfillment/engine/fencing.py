"""Fencing tokens: what every call to an external service carries.

An attempt of a step is identified by (run, step, epoch, attempt); a compensation by
(run, action, claim). The run record knows which attempt and which claim are live;
a service that can check a token (in the same atomic write as its effect: a Redis
script can call ``stale_attempt`` / ``stale_claim`` of the engine's ``lib.lua``)
refuses a stale one, so a presumed-dead attempt that wakes up late cannot act. A
service that cannot check tokens uses :attr:`AttemptToken.idempotency_key`, which
stays the same across attempts, so a retry replays the first effect instead of
repeating it; a late success it reports makes the engine run the step's undo again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AttemptToken:
    """The fencing token of one attempt of a step."""

    run_id: str
    step: str
    epoch: int
    attempt: int
    #: 1, then one more each time a resumed run does the step again after its undo
    round: int = 1

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of the step in one round: a retry replays, never
        repeats; a resumed run that does the step again after its undo acts anew."""
        base = f"{self.run_id}:{self.step}"
        return base if self.round == 1 else f"{base}:r{self.round}"

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "attempt": self.attempt,
                "round": self.round}  # fmt: skip


@dataclass(frozen=True, slots=True)
class UndoToken:
    """The fencing token of one claim of a compensation."""

    run_id: str
    action: str
    claim: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.action}"

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "claim": self.claim}


Token = AttemptToken | UndoToken

"""Fencing tokens: what every call to an external service carries.

An attempt of a step is identified by (order, step, epoch, attempt); a compensation
by (order, action, claim). The order record knows which attempt and which claim are
live; a service that can check a token (the simulated ones do, in the same Redis
script as their ledger write) refuses a stale one, so a presumed-dead attempt that
wakes up late cannot act. A service that cannot check tokens uses
:attr:`AttemptToken.idempotency_key`, which stays the same across attempts, so a
retry replays the first effect instead of repeating it (README, "Adapters").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AttemptToken:
    """The fencing token of one attempt of a step."""

    order_id: str
    step: str
    epoch: int
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of the step: a retry replays, never repeats."""
        return f"{self.order_id}:{self.step}"

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class UndoToken:
    """The fencing token of one claim of a compensation."""

    order_id: str
    action: str
    claim: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.order_id}:{self.action}"

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "claim": self.claim}


Token = AttemptToken | UndoToken

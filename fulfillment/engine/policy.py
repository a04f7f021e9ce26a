"""Step policies: every option a step has, in one model, resolved once.

A :class:`StepPolicy` is a step's time limit (Temporal's start-to-close timeout) and
its retry policy (Temporal's: initial interval, backoff coefficient, maximum
interval, maximum attempts, non-retryable error types). Its defaults are
Temporal's, with a 5 s time limit. Layers give any subset of its fields by name, and
the later layer wins (dramatiq's message > actor > default, one level deeper)::

    StepPolicy defaults                          Temporal's retry policy, 5 s
    < the deployment's                           FULFILLMENT_STEP_TIME_LIMIT, FULFILLMENT_RETRY_*
    < the workflow's                             Workflow(defaults={...})
    < the step's own                             Step(retry=RetryPolicy(...), time_limit=...)
    < the deployment's override of the step      FULFILLMENT_STEP_POLICIES
    < the run's own                              client.start(..., options={step: {...}})

:meth:`StepPolicy.resolve` merges them and validates each layer as it goes, so an
error names the layer and the field. The resolved policy of every step of a run is
written into the run's record when it starts (:meth:`StepPolicy.spec`, under the
same field names), and everything downstream reads it from there: the Lua scripts
(backoff, attempts, lease), the worker (what is retried, the attempt's time limit)
and the sender (the time limit of the step's message).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, NonRetryableError
from .validation import one_line, problems

#: a layer: a name saying where it comes from, and the options it sets (None: nothing)
Layer = tuple[str, Mapping[str, Any] | None]


class StepPolicy(BaseModel):
    """A step's resolved options. ``maximum_attempts`` 0 means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    time_limit: float = Field(default=5.0, gt=0, description="Seconds per attempt.")
    initial_interval: float = Field(default=1.0, gt=0, description="First retry delay (s).")
    backoff_coefficient: float = Field(default=2.0, ge=1, description="Delay growth per retry.")
    maximum_interval: float = Field(default=100.0, gt=0, description="Longest retry delay (s).")
    maximum_attempts: int = Field(default=0, ge=0, description="0: unlimited.")
    non_retryable_error_types: tuple[str, ...] = Field(
        default=(), description="Exception class names that fail the run at once."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @classmethod
    def option_names(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def resolve(cls, layers: Iterable[Layer]) -> StepPolicy:
        """Merge ``layers`` (the later winning) over the defaults; validate each layer.

        Raises :class:`ConfigError` naming the layer and the field that is wrong.
        """
        merged: dict[str, Any] = {}
        for where, layer in layers:
            if not layer:
                continue
            if not isinstance(layer, Mapping):
                raise ConfigError(f"{where}: step options must be a mapping, not {layer!r}")
            unknown = sorted(set(layer) - set(cls.model_fields))
            if unknown:
                raise ConfigError(
                    f"{where}: unknown step option(s) {unknown}; options are {cls.option_names()}"
                )
            candidate = {**merged, **{k: v for k, v in layer.items() if v is not None}}
            try:
                cls.model_validate(candidate)
            except ValidationError as exc:
                reasons = problems(exc, lambda loc: str(loc[0]))
                raise ConfigError(one_line(f"{where}: ", reasons)) from None
            merged = candidate
        return cls.model_validate(merged)

    def retryable(self, exc: BaseException) -> bool:
        """Is ``exc`` retried? Not a non-retryable error, nor a type the policy names."""
        if isinstance(exc, NonRetryableError):
            return False
        names = {cls.__name__ for cls in type(exc).__mro__}
        return not names & set(self.non_retryable_error_types)

    def spec(self, *, lease: float, undo: str | None = None) -> str:
        """The policy as a run's plan stores it (JSON): every field under its own name, plus
        ``kind``, ``lease`` (seconds an attempt holds its lease) and ``undo``."""
        data: dict[str, Any] = {"kind": "step", **self.model_dump(), "lease": lease}
        if undo is not None:
            data["undo"] = undo
        return json.dumps(data)

    @classmethod
    def from_spec(cls, spec: str) -> StepPolicy:
        """The policy a run's plan stored (see :meth:`spec`)."""
        return _from_spec(spec)


@lru_cache(maxsize=1024)
def _from_spec(spec: str) -> StepPolicy:
    data = json.loads(spec)
    return StepPolicy.model_validate({k: data[k] for k in StepPolicy.model_fields if k in data})


__all__ = ["Layer", "StepPolicy"]

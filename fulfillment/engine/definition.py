"""Workflow definitions: ordered steps and gates, given as data.

A :class:`Workflow` is an ordered list of :class:`Step` (an activity, its retry
policy and time limit, and an optional :class:`Undo`) and :class:`Gate` (a named
human signal with a timeout, and a condition saying whether it applies to a run),
plus a function that builds the run's result from the steps' results::

    returns = Workflow(
        name="returns",
        steps=[
            Step("inspect", inspect_item, retry=RetryPolicy(maximum_attempts=5)),
            Gate("inspection_passed", timeout=3600),
            Step("refund", refund, undo=Undo("reverse_refund", reverse_refund)),
            Step("restock", restock, time_limit=30),
        ],
        result=lambda results: f"Returned: {results['refund']}",
    )

Step options (time limit, retry policy) are one model,
:class:`~fulfillment.engine.policy.StepPolicy`, resolved once per step from layers,
the later winning: its defaults (Temporal's retry policy, a 5 s time limit) < the
deployment's (``FULFILLMENT_RETRY_*``, ``FULFILLMENT_STEP_TIME_LIMIT``) < the
workflow's ``defaults`` < the step's own < the deployment's per-step override
(``FULFILLMENT_STEP_POLICIES``) < the run's (``start(..., options=...)``). The
resolved policy of every step is written into the run's record when it starts;
the scripts and the workers read it from there.

A failed or cancelled run undoes its steps' effects in reverse order, one at a time
(the last completed step first); ``Workflow(concurrent_undo=True)`` starts every undo
at once instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import (
    ConfigError,
    ResultTimeout,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotFound,
    SignalError,
)
from .keys import RunStatus

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class RetryPolicy:
    """Temporal's retry policy, declared where a step is. A field left ``None`` comes from
    the layer below (see :class:`~fulfillment.engine.policy.StepPolicy`).

    ``maximum_attempts`` 0 means unlimited; ``non_retryable_error_types`` names
    exception classes (by class name) that fail the run at once.
    """

    initial_interval: float | None = None
    backoff_coefficient: float | None = None
    maximum_interval: float | None = None
    maximum_attempts: int | None = None
    non_retryable_error_types: Sequence[str] | None = None

    def options(self) -> dict[str, Any]:
        """The fields that are set, under the step policy's names."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["non_retryable_error_types"] is not None:
            out["non_retryable_error_types"] = tuple(out["non_retryable_error_types"])
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Undo:
    """A compensation: undoes its step's effect. ``activity(ctx) -> (undone, summary)``.

    ``undone`` is False when there was nothing to undo. It must be idempotent: the
    engine may run it again (after a late effect of a presumed-dead attempt).
    """

    name: str
    activity: Callable[..., tuple[bool, str]]
    task_name: str | None = None


@dataclass(frozen=True)
class Step:
    """One activity of a workflow, with its options and its undo."""

    name: str
    activity: Callable[..., Any]
    retry: RetryPolicy | None = None
    time_limit: float | None = None
    undo: Undo | None = None
    task_name: str | None = None

    def options(self) -> dict[str, Any]:
        """The step's own options (a layer of its policy)."""
        out = self.retry.options() if self.retry else {}
        if self.time_limit is not None:
            out["time_limit"] = self.time_limit
        return out


def _always(_input: Any) -> bool:
    return True


@dataclass(frozen=True)
class Gate:
    """A human signal the run waits for, up to ``timeout`` seconds (``applies``: for this run?).

    Approve lets the run go on; reject fails it with ``reject_error`` (the reason
    as message); no decision in time fails it with ``timeout_error``. A decision that
    arrives before the run reaches the gate counts when it gets there.
    ``cancel_decides``: a cancel is one of the gate's decisions (once the gate was
    decided, a cancel is refused).
    """

    name: str
    timeout: float
    applies: Callable[[Any], bool] = _always
    reject_error: str = "Rejected"
    timeout_error: str = "GateTimeout"
    timeout_message: str = "Gate timed out"
    cancel_decides: bool = False
    task_name: str | None = None
    timeout_task_name: str | None = None


@dataclass(frozen=True)
class Errors:
    """The exceptions a workflow's client raises, by meaning: the engine's own, or the
    workflow's subclasses of them (an order API raises ``OrderNotFound``, which is a
    :class:`~fulfillment.engine.errors.RunNotFound`). Each takes the same arguments as
    the engine's class."""

    not_found: type[RunNotFound] = RunNotFound
    conflict: type[RunConflict] = RunConflict
    refused: type[SignalError] = SignalError
    timeout: type[ResultTimeout] = ResultTimeout
    failed: type[RunFailed] = RunFailed
    cancelled: type[RunCancelled] = RunCancelled


def _join_results(results: Mapping[str, str]) -> str:
    return ", ".join(results.values())


@dataclass(frozen=True)
class Workflow:
    """A workflow definition: what the engine runs, durably, for every run.

    ``input``: a pydantic model the run's input is validated into (else any JSON
    object); ``encode(input)``: its stored JSON (default: the model's JSON, keys
    sorted). ``summary(input)``: what may be shown of a run anywhere (Flower, logs);
    never secrets. ``result(results)``: the run's result from its steps' results, by
    step name, in order. ``companions``: the workflow's own per-run keys (suffixes),
    kept and expired with the run. ``namespace``: the prefix of its Redis keys (default
    ``<the deployment's key namespace>:<name>``).
    ``defaults``: step options for every step of the workflow (a layer of each step's
    policy). ``concurrent_undo``: a failed or cancelled run starts all its undos at
    once, instead of one at a time in reverse order (the default).

    The workflow's vocabulary: ``noun`` names a run in messages (``order 'o-1' not
    found``); ``labels`` gives the workflow's own word for a run status or a history
    event type where it has one (``{"waiting": "awaiting_approval", "run_started":
    "order_placed"}``): views, history, lists and filters use them; ``errors`` the
    exceptions its client raises (:class:`Errors`).
    """

    name: str
    steps: Sequence[Step | Gate]
    result: Callable[[Mapping[str, str]], str] = _join_results
    input: type | None = None
    encode: Callable[[Any], str] | None = None
    summary: Callable[[Any], Mapping[str, Any]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    task_prefix: str | None = None
    cancel_error: str = "Cancelled"
    companions: tuple[str, ...] = ()
    noun: str = "run"
    labels: Mapping[str, str] = field(default_factory=dict)
    errors: Errors = field(default_factory=Errors)
    concurrent_undo: bool = False

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ConfigError(f"workflow name {self.name!r}: letters, digits and _ only")
        if not self.steps or not isinstance(self.steps[-1], Step):
            raise ConfigError(f"workflow {self.name}: the last element must be a Step")
        names = [s.name for s in self.steps]
        for name in names:
            if not NAME.match(name):
                raise ConfigError(f"workflow {self.name}: bad step name {name!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"workflow {self.name}: step names must be unique: {names}")
        undos = [s.undo.name for s in self.activities if s.undo]
        if len(set(undos)) != len(undos) or set(undos) & set(names):
            raise ConfigError(f"workflow {self.name}: undo names must be unique: {undos}")
        words = list(self.labels.values())
        if len(set(words)) != len(words):
            raise ConfigError(f"workflow {self.name}: labels must be distinct: {words}")

    def label(self, name: str) -> str:
        """The workflow's word for a run status or history event type (itself if none)."""
        return self.labels.get(name, name)

    def status_named(self, word: str) -> RunStatus:
        """The run status the workflow calls ``word`` (its label, or the engine's name).
        Raises :class:`ValueError` listing the statuses."""
        for status in RunStatus:
            if word in (status.value, self.labels.get(status.value)):
                return status
        raise ValueError(f"unknown status {word!r}; statuses are {', '.join(self.statuses)}")

    @property
    def statuses(self) -> list[str]:
        """Every run status, in the workflow's words."""
        return [self.label(s.value) for s in RunStatus]

    @property
    def activities(self) -> list[Step]:
        return [s for s in self.steps if isinstance(s, Step)]

    @property
    def gates(self) -> list[Gate]:
        return [s for s in self.steps if isinstance(s, Gate)]

    def element(self, name: str) -> Step | Gate:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def undo(self, action: str) -> tuple[Step, Undo]:
        """The step whose undo is ``action``, and the undo."""
        for s in self.activities:
            if s.undo and s.undo.name == action:
                return s, s.undo
        raise KeyError(action)

    @property
    def prefix(self) -> str:
        """Prefix of the generated Celery task names."""
        return self.task_prefix or self.name

    def task_name(self, element: Step | Gate | Undo) -> str:
        return element.task_name or f"{self.prefix}.{element.name}"

    def timeout_task_name(self, gate: Gate) -> str:
        return gate.timeout_task_name or f"{self.prefix}.{gate.name}_timeout"

    def wait_task_name(self, gate: Gate) -> str:
        """The task that records the span of a wait at ``gate`` a signal ended."""
        return f"{self.prefix}.{gate.name}_wait"

    def chain_from(self, name: str, plan: Sequence[str] | None = None) -> list[str]:
        """The steps one message chain runs when it starts at ``name``.

        ``plan``: the run's steps (a gate that does not apply to it is left out). A
        gate's chain is the gate alone (the wait ends outside the chain, with a
        signal); a step's chain runs on to the next gate or the end.
        """
        names = list(plan) if plan else [s.name for s in self.steps]
        start = names.index(name)
        if isinstance(self.element(name), Gate):
            return [name]
        out = [name]
        for other in names[start + 1 :]:
            if isinstance(self.element(other), Gate):
                break
            out.append(other)
        return out

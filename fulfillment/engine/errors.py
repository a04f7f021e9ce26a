"""Exceptions of the engine.

Two families:

* :class:`WorkflowError` -- raised to callers of a workflow's client (unknown run,
  a signal that lost the race, a run that failed, bad configuration).
* raised inside activities: :class:`NonRetryableError` fails the run at once
  (Temporal's non-retryable errors); :class:`StaleAttempt` says a service refused a
  call whose fencing token is no longer the live one; anything else is retried with
  the step's backoff (:class:`StepTimeout` is how an overrun shows).
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base class of errors reported to callers of the engine's client."""


class ConfigError(WorkflowError):
    """A setting is missing or invalid, or a workflow definition is."""


class InvalidArgument(WorkflowError, ValueError):
    """An argument of an operation (who decides, a reason, a timeout, ...) is not acceptable."""


class RunNotFound(WorkflowError, LookupError):
    """No run with that id exists (or it expired after the retention period)."""

    def __init__(self, run_id: str, noun: str = "run") -> None:
        super().__init__(f"{noun} {run_id!r} not found")
        self.run_id = run_id


class RunConflict(WorkflowError):
    """A run id was reused with a different input."""


class SignalError(WorkflowError):
    """A signal or cancel could not be applied (already decided, finished, ...)."""


class RunNotCompleted(WorkflowError):
    """Raised by ``RunHandle.result`` when the run ended without a result: it failed
    (:class:`RunFailed`) or was cancelled (:class:`RunCancelled`). Raised only once
    every effect the run made was undone.

    ``type`` is the failure type (a business error's class name, the gate's timeout
    error, the workflow's ``cancel_error`` for a cancel), ``message`` its message (a
    cancel's reason), ``compensations`` what was undone.
    """

    status = "ended"

    def __init__(
        self,
        run_id: str,
        type: str,
        message: str,
        compensations: list[str] | None = None,
        noun: str = "run",
    ) -> None:
        text = f"{noun} {run_id} {self.status}: {self._reason(type, message)}"
        if compensations:
            text += f" (compensated: {', '.join(compensations)})"
        super().__init__(text)
        self.run_id = run_id
        self.type = type
        self.message = message
        self.compensations = compensations or []

    @staticmethod
    def _reason(type: str, message: str) -> str:
        return f"{type}: {message}"


class RunFailed(RunNotCompleted):
    """The run failed (a non-retryable error, attempts exhausted, a gate rejected or
    timed out). Not raised for a cancel: a cancel is not a failure."""

    status = "failed"


class RunCancelled(RunNotCompleted):
    """The run was cancelled (``message`` is the cancel's reason). Not a :class:`RunFailed`."""

    status = "cancelled"

    @staticmethod
    def _reason(type: str, message: str) -> str:
        return message or type


class ResultTimeout(WorkflowError, TimeoutError):
    """The run did not finish within the ``timeout`` given to ``result()``."""


# --- raised inside activities ---------------------------------------------------------


class NonRetryableError(Exception):
    """A failure an attempt must not retry: the run fails at once.

    Its failure type is the class name (:attr:`type`); a step's retry policy may also
    name further exception types that are not retried.
    """

    @property
    def type(self) -> str:
        return type(self).__name__


class StaleAttempt(Exception):
    """A service refused a call whose fencing token is no longer the live one.

    The attempt (or compensation claim) was presumed lost and superseded, or the
    run finished meanwhile: whatever it wanted to do must not happen.
    """


class StepTimeout(Exception):
    """An attempt overran its time limit (Temporal's start-to-close timeout). Retryable."""


class InvalidInput(NonRetryableError):
    """The run's stored input does not parse as the workflow's ``input`` model (for
    instance, the model changed since the run started). The run fails at once."""


class ResultError(NonRetryableError):
    """An activity's output is not JSON, or the workflow's ``result`` function failed
    on the steps' results. The run fails at once, and the step is undone too (its
    effect happened)."""

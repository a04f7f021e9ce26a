"""Exceptions of the order workflow.

Two families:

* :class:`FulfillmentError` -- raised to callers of the Python API and the CLI
  (bad input, unknown order, a decision that lost the race, a failed order). Each
  is also the engine's error of the same meaning (``OrderNotFound`` is a
  ``RunNotFound``, ...), so code written against the engine catches them too; the
  order workflow names them as its errors (:data:`ORDER_ERRORS`) and the engine raises
  them directly.
* :class:`BusinessError` -- raised inside steps by the simulated services. They are
  *non-retryable* (the engine's ``NonRetryableError``): the order fails at once
  (Temporal's ``nonRetryableErrorTypes``). Anything else raised inside a step is
  retried with backoff.
"""

from __future__ import annotations

from ..engine import errors as engine
from ..engine.definition import Errors

ConfigError = engine.ConfigError
InvalidArgument = engine.InvalidArgument
StaleAttempt = engine.StaleAttempt
StepTimeout = engine.StepTimeout


class FulfillmentError(engine.WorkflowError):
    """Base class of errors reported to API and CLI callers."""


class InvalidOrder(FulfillmentError, ValueError):
    """The submitted order is malformed; the message names the offending field."""


class OrderNotFound(FulfillmentError, engine.RunNotFound):
    """No order with that id exists (or it expired after the retention period)."""

    def __init__(self, order_id: str, noun: str = "order") -> None:
        engine.RunNotFound.__init__(self, order_id, noun)
        self.order_id = order_id


class OrderConflict(FulfillmentError, engine.RunConflict):
    """An order id was reused with different content."""


class DecisionError(FulfillmentError, engine.SignalError):
    """An approve/reject/cancel could not be applied (already decided, finished, ...)."""


class OrderNotFulfilled(FulfillmentError, engine.RunNotCompleted):
    """Raised by :meth:`OrderHandle.result` when the order failed (:class:`OrderFailed`)
    or was cancelled (:class:`OrderCancelled`), once its effects were undone.

    ``type`` is the failure type (``CreditCardExpired``, ``ApprovalTimeout``,
    ``OrderCancelled`` for a cancel, ...), ``message`` its message (a cancel's reason),
    ``compensations`` what was undone (e.g. a refund).
    """

    def __init__(
        self,
        order_id: str,
        type: str,
        message: str,
        compensations: list[str] | None = None,
        noun: str = "order",
    ) -> None:
        engine.RunNotCompleted.__init__(self, order_id, type, message, compensations, noun)
        self.order_id = order_id


class OrderFailed(OrderNotFulfilled, engine.RunFailed):
    """The order failed. A cancelled order raises :class:`OrderCancelled`, not this."""

    status = "failed"


class OrderCancelled(OrderNotFulfilled, engine.RunCancelled):
    """The order was cancelled: not an :class:`OrderFailed`."""

    status = "cancelled"


class ResultTimeout(FulfillmentError, engine.ResultTimeout):
    """The order did not finish within the ``timeout`` given to ``result()``."""


#: the order workflow's errors: what the engine raises to callers of the order API
ORDER_ERRORS = Errors(
    not_found=OrderNotFound,
    conflict=OrderConflict,
    refused=DecisionError,
    timeout=ResultTimeout,
    failed=OrderFailed,
    cancelled=OrderCancelled,
)


# --- raised inside steps -------------------------------------------------------------


class BusinessError(engine.NonRetryableError):
    """A non-retryable failure of a step: the order fails at once."""


class CreditCardExpired(BusinessError):
    """The card's expiry month is before the current month."""

    def __init__(self, message: str = "Payment failed: Credit card expired") -> None:
        super().__init__(message)


class UnknownItem(BusinessError):
    """The order names an item the inventory service does not carry."""


class OutOfStock(BusinessError):
    """Not enough stock to reserve the ordered quantity."""


class ServiceUnavailable(Exception):
    """A simulated service is down (fault injection). Retryable."""

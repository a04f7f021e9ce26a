"""Exceptions.

Two families:

* :class:`FulfillmentError` — raised to callers of the Python API and the CLI
  (bad input, unknown order, a decision that lost the race, a failed order).
* :class:`BusinessError` — raised inside steps by the simulated services. They are
  *non-retryable*: the order fails at once (Temporal's ``nonRetryableErrorTypes``).
  Anything else raised inside a step is retried with backoff.
"""

from __future__ import annotations


class FulfillmentError(Exception):
    """Base class of errors reported to API and CLI callers."""


class ConfigError(FulfillmentError):
    """A setting is missing or invalid."""


class InvalidOrder(FulfillmentError, ValueError):
    """The submitted order is malformed; the message names the offending field."""


class InvalidArgument(FulfillmentError, ValueError):
    """An argument of an operation (who decides, a reason, ...) is not acceptable."""


class OrderNotFound(FulfillmentError, LookupError):
    """No order with that id exists (or it expired after the retention period)."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class OrderConflict(FulfillmentError):
    """An order id was reused with different content."""


class DecisionError(FulfillmentError):
    """An approve/reject/cancel could not be applied (already decided, finished, ...)."""


class OrderFailed(FulfillmentError):
    """Raised by :meth:`OrderHandle.result` when the order failed.

    ``type`` is the failure type (``CreditCardExpired``, ``ApprovalTimeout``, ...),
    ``message`` its message, ``compensations`` what was undone (e.g. a refund).
    """

    def __init__(
        self, order_id: str, type: str, message: str, compensations: list[str] | None = None
    ) -> None:
        text = f"order {order_id} failed: {type}: {message}"
        if compensations:
            text += f" (compensated: {', '.join(compensations)})"
        super().__init__(text)
        self.order_id = order_id
        self.type = type
        self.message = message
        self.compensations = compensations or []


class OrderCancelled(OrderFailed):
    """Raised by :meth:`OrderHandle.result` when the order was cancelled."""


class ResultTimeout(FulfillmentError, TimeoutError):
    """The order did not finish within the ``timeout`` given to ``result()``."""


# --- raised inside steps -------------------------------------------------------------


class BusinessError(Exception):
    """A non-retryable failure of a step: the order fails at once."""

    #: failure type recorded on the order (defaults to the class name)
    @property
    def type(self) -> str:
        return type(self).__name__


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


class StaleAttempt(Exception):
    """A service refused a call whose fencing token is no longer the live one.

    The attempt (or compensation claim) was presumed lost and superseded, or the
    order finished meanwhile: whatever it wanted to do must not happen.
    """


class StepTimeout(Exception):
    """An attempt overran its time limit (Temporal's start-to-close timeout). Retryable."""

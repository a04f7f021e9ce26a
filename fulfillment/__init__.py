"""fulfillment: durable order fulfillment on Celery + Redis + Flower.

Temporal's order-fulfillment demo (payment -> inventory -> delivery with retries,
non-retryable errors, worker failover and a human approval) as the first workflow
of :mod:`fulfillment.engine`, a durable workflow runtime on Celery chains,
Redis-held run state and a watchdog that fails over a dead worker's step within
one step time limit.

Public API::

    from fulfillment import place_order, get_order, approve_order, reject_order, cancel_order

Names load on first use, so ``import fulfillment.engine`` (a workflow of your
own) does not build the order app.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "app": ".celery_app",
    "FulfillmentClient": ".client",
    "OrderHandle": ".client",
    "approve_order": ".client",
    "cancel_order": ".client",
    "get_order": ".client",
    "place_order": ".client",
    "reject_order": ".client",
    "resume_order": ".client",
    "retry_now": ".client",
    "BusinessError": ".errors",
    "CreditCardExpired": ".errors",
    "DecisionError": ".errors",
    "FulfillmentError": ".errors",
    "InvalidOrder": ".errors",
    "OrderCancelled": ".errors",
    "OrderConflict": ".errors",
    "OrderFailed": ".errors",
    "OrderNotFulfilled": ".errors",
    "OrderNotFound": ".errors",
    "OutOfStock": ".errors",
    "ResultTimeout": ".errors",
    "UnknownItem": ".errors",
    "CreditCard": ".models",
    "Order": ".models",
    "OrderItem": ".models",
    "Payment": ".models",
    "Settings": ".settings",
    "load_settings": ".settings",
    "HistoryEvent": ".state",
    "OrderStatus": ".state",
    "OrderView": ".state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # PEP 562: load a public name on first use
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulfillment' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    if name == "app":  # ``celery -A fulfillment flower``: Flower serves the Orders view too
        from .ui import install_if_flower

        install_if_flower()
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""fulfillment: durable order fulfillment on Celery + Redis + Flower.

Temporal's order-fulfillment demo (payment -> inventory -> delivery with retries,
non-retryable errors, worker failover and a human approval) as the first workflow
of :mod:`fulfillment.engine`, a durable workflow runtime on Celery chains,
Redis-held run state and a watchdog that fails over a dead worker's step within
one step time limit.

Public API::

    from fulfillment import place_order, get_order, approve_order, reject_order, cancel_order

The package is three layers, each a folder, imports pointing one way::

    fulfillment/engine/   a durable-workflow runtime on Celery + Redis; knows no order
    fulfillment/orders/   the order workflow on it (models, definition, services, API)
    fulfillment/ops/      operations: CLI, Flower's Orders view, demo, processes, the
                          embedded server (fulfillment/contrib/django: the Django app)

Names load on first use, so ``import fulfillment.engine`` (a workflow of your
own) does not build the order app. Importing the package gives the engine its
embedded server: a deployment without ``FULFILLMENT_REDIS_URL`` runs on a valkey
server started on demand (:mod:`fulfillment.ops.embedded`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .engine.connection import use_server_starter
from .ops.embedded import ensure_server

use_server_starter(ensure_server)

__version__ = "0.1.0"

_EXPORTS = {
    "app": ".orders.app",
    "FulfillmentClient": ".orders.client",
    "OrderHandle": ".orders.client",
    "approve_order": ".orders.client",
    "cancel_order": ".orders.client",
    "get_order": ".orders.client",
    "place_order": ".orders.client",
    "reject_order": ".orders.client",
    "resume_order": ".orders.client",
    "retry_now": ".orders.client",
    "BusinessError": ".orders.errors",
    "CreditCardExpired": ".orders.errors",
    "DecisionError": ".orders.errors",
    "FulfillmentError": ".orders.errors",
    "InvalidOrder": ".orders.errors",
    "OrderCancelled": ".orders.errors",
    "OrderConflict": ".orders.errors",
    "OrderFailed": ".orders.errors",
    "OrderNotFulfilled": ".orders.errors",
    "OrderNotFound": ".orders.errors",
    "OutOfStock": ".orders.errors",
    "ResultTimeout": ".orders.errors",
    "UnknownItem": ".orders.errors",
    "CreditCard": ".orders.models",
    "Order": ".orders.models",
    "OrderItem": ".orders.models",
    "Payment": ".orders.models",
    "Settings": ".orders.settings",
    "load_settings": ".orders.settings",
    "HistoryEvent": ".orders.state",
    "OrderStatus": ".orders.state",
    "OrderView": ".orders.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # PEP 562: load a public name on first use
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulfillment' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    if name == "app":  # ``celery -A fulfillment flower``: Flower serves the Orders view too
        from .ops.ui import install_if_flower

        install_if_flower()
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""fulfillment: durable order fulfillment on Celery + Redis + Flower.

Temporal's order-fulfillment demo (payment -> inventory -> delivery with
retries, non-retryable errors, worker failover and a human approval), built on
Celery chains, Redis-held order state and a watchdog that fails over a dead
worker's step within one step time limit.

Public API::

    from fulfillment import place_order, get_order, approve_order, reject_order, cancel_order
"""

from .celery_app import app
from .client import (
    FulfillmentClient,
    OrderHandle,
    approve_order,
    cancel_order,
    get_order,
    place_order,
    reject_order,
)
from .errors import (
    BusinessError,
    CreditCardExpired,
    DecisionError,
    FulfillmentError,
    InvalidOrder,
    OrderCancelled,
    OrderConflict,
    OrderFailed,
    OrderNotFound,
    OutOfStock,
    ResultTimeout,
    UnknownItem,
)
from .models import CreditCard, Order, OrderItem, Payment
from .settings import Settings, load_settings
from .state import HistoryEvent, OrderStatus, OrderView

__version__ = "0.1.0"

__all__ = [
    "BusinessError",
    "CreditCard",
    "CreditCardExpired",
    "DecisionError",
    "FulfillmentClient",
    "FulfillmentError",
    "HistoryEvent",
    "InvalidOrder",
    "Order",
    "OrderCancelled",
    "OrderConflict",
    "OrderFailed",
    "OrderHandle",
    "OrderItem",
    "OrderNotFound",
    "OrderStatus",
    "OrderView",
    "OutOfStock",
    "Payment",
    "ResultTimeout",
    "Settings",
    "UnknownItem",
    "app",
    "approve_order",
    "cancel_order",
    "get_order",
    "load_settings",
    "place_order",
    "reject_order",
]

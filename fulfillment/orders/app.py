"""The Celery application (``celery -A fulfillment worker`` finds it as ``fulfillment.app``).

The engine's app, configured from ``celeryconfig`` (the environment's settings), with
the order workflow registered on it: its tasks are generated from the definition.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init

from ..engine import create_app, register
from ..engine.app import settings_or_exit
from ..engine.connection import client_for
from .services import seed_stock
from .settings import get_settings
from .workflow import order_workflow

app = create_app("fulfillment", settings_or_exit(get_settings), config="celeryconfig")
ORDERS = register(app, order_workflow(get_settings()))


@worker_init.connect(weak=False)
def _stock_the_inventory(sender: Any = None, **_: Any) -> None:
    """A worker starts with the catalogue's stock in place (items not stocked yet)."""
    seed_stock(client_for(get_settings()))

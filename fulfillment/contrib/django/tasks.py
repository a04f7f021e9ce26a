"""Found by the project's ``app.autodiscover_tasks()``: the engine and the order
workflow go on the project's own Celery app (the app loading this module)."""

from __future__ import annotations

from celery import current_app

from ...orders.workflow import install

ORDERS = install(current_app._get_current_object())

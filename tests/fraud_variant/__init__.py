"""The order workflow with a fraud check between payment and inventory (README, "Adding a step").

``fraud_workflow`` is ``order_workflow`` with the one step the README adds; its
workers run ``celery -A tests.fraud_variant worker`` (``app`` is built on first use,
from the environment the deployment gives the worker).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from celery import Celery

from fulfillment.engine import RetryPolicy, Step, create_app, register
from fulfillment.orders.settings import Settings, get_settings
from fulfillment.orders.workflow import PREFIX, order_workflow

from .activities import check_fraud

FRAUD_CHECK = Step(
    "fraud_check",
    check_fraud,
    task_name=f"{PREFIX}.check_fraud",
    retry=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["FraudSuspected"]),
)


def fraud_workflow(settings: Settings) -> Any:
    """``order_workflow`` as the README's change leaves it: the fraud check after payment."""
    base = order_workflow(settings)
    steps = list(base.steps)
    steps.insert([s.name for s in steps].index("payment") + 1, FRAUD_CHECK)
    return replace(base, steps=steps)


@cache
def make_app() -> Celery:
    celery = create_app("fulfillment", get_settings(), config="celeryconfig")
    register(celery, fraud_workflow(get_settings()))
    return celery


def __getattr__(name: str) -> Any:  # ``celery -A tests.fraud_variant`` asks for ``app``
    if name == "app":
        return make_app()
    raise AttributeError(name)

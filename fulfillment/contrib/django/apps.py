"""The Django app: reads ``settings.FULFILLMENT`` when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class FulfillmentConfig(AppConfig):
    name = "fulfillment.contrib.django"
    label = "fulfillment"
    verbose_name = "Order fulfillment"

    def ready(self) -> None:
        from .conf import apply_django_settings

        apply_django_settings()

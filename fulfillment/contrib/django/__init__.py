"""Fulfillment in a Django project: management commands, settings from ``settings.py``,
and the order tasks on the project's own Celery app.

``INSTALLED_APPS += ["fulfillment.contrib.django"]``, then::

    python manage.py place_order order.json --wait
    python manage.py approve_order ORDER_ID --by alice
    python manage.py show_order ORDER_ID --json

Settings: ``FULFILLMENT = {"REDIS_URL": ..., "APPROVAL_TIMEOUT": 30, ...}`` in
``settings.py``; a ``FULFILLMENT_*`` environment variable wins over it. Celery: the
usual ``proj/celery.py`` (``app.config_from_object("django.conf:settings",
namespace="CELERY")`` and ``app.autodiscover_tasks()``) finds
``fulfillment.contrib.django.tasks``, which puts the engine and the order workflow on
that app. See README, "Django".
"""

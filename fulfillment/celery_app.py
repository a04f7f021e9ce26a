"""The Celery application (``celery -A fulfillment worker`` finds it as ``fulfillment.app``)."""

from __future__ import annotations

from celery import Celery

from .settings import Settings
from .worker import WatchdogStep

app = Celery("fulfillment", include=["fulfillment.tasks"])
app.config_from_object("celeryconfig")
app.steps["worker"].add(WatchdogStep)


def create_app(settings: Settings) -> Celery:
    """An app that only sends messages, configured for ``settings`` (e.g. another Redis)."""
    import celeryconfig

    client_app = Celery("fulfillment-client", set_as_current=False)
    client_app.conf.update(celeryconfig.build(settings))
    return client_app

"""``settings.FULFILLMENT`` as the fulfillment settings (the environment wins)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ...orders.settings import Settings, get_settings


def apply_django_settings() -> None:
    """Make ``settings.FULFILLMENT`` (names without the ``FULFILLMENT_`` prefix, any
    case) the defaults of the ``FULFILLMENT_*`` settings. A variable set in the
    environment wins; worker and Flower processes started from here inherit both."""
    conf = getattr(settings, "FULFILLMENT", None)
    if conf is None:
        return
    if not isinstance(conf, Mapping):
        raise ImproperlyConfigured("FULFILLMENT must be a dict of fulfillment settings")
    known = set(Settings.model_fields)
    for key, value in conf.items():
        name = str(key).lower().removeprefix("fulfillment_")
        if name not in known:
            raise ImproperlyConfigured(
                f"FULFILLMENT: unknown setting {key!r}; settings are "
                + ", ".join(sorted(n.upper() for n in known))
            )
        if isinstance(value, Mapping | list | tuple):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        os.environ.setdefault(f"FULFILLMENT_{name.upper()}", text)
    get_settings.cache_clear()

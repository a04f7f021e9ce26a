"""Celery configuration of the fulfillment app, every delivery setting chosen on purpose.

Values derive from the ``FULFILLMENT_*`` environment (``fulfillment/settings.py``).
The settings themselves, and why each is what it is, are the engine's:
:func:`fulfillment.engine.config.build` (read its docstring). The module attributes
Celery reads (``broker_url``, ``task_acks_late``, ...) are ``build(get_settings())``,
computed on first access so that importing this module never starts a server.
Add your own Celery settings below as usual.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fulfillment.engine.config import build
from fulfillment.orders.settings import get_settings

__all__ = ["build"]


@cache
def _configuration() -> dict[str, Any]:
    return build(get_settings())


def __getattr__(name: str) -> Any:  # PEP 562: resolved when Celery reads a setting
    try:
        return _configuration()[name]
    except KeyError:
        raise AttributeError(name) from None


def __dir__() -> list[str]:
    return sorted(_configuration())

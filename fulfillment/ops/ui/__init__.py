"""The Orders view of Flower: Temporal's Web UI for this pipeline, served by Flower itself.

:func:`install` adds the view's handlers to Flower's own URL table (before its
catch-all), a template loader that serves the view's templates and adds an "Orders"
entry to Flower's navigation bar, and the order metrics to the Prometheus registry
Flower's ``/metrics`` exports. Every page and API sits behind Flower's own
authentication (``--basic-auth``, ``--auth``); every form is CSRF-protected.

It is installed when the fulfillment app is loaded in a process that runs Flower
(``celery -A fulfillment flower``, ``fulfillment flower``, the compose service):
``fulfillment/__init__.py`` calls :func:`install_if_flower`.
"""

from __future__ import annotations

import sys

_installed = False


def install_if_flower() -> None:
    """Install the view if this process runs Flower (its URL table is loaded)."""
    if "flower.urls" in sys.modules:
        install()


def install() -> None:
    """Add the Orders view, its templates and its metrics to Flower (once)."""
    global _installed
    if _installed:
        return
    from flower import urls

    from .handlers import HANDLERS
    from .loader import OverlayLoader
    from .metrics import register

    table = urls.handlers
    catch_all = next(
        (i for i, h in enumerate(table) if isinstance(h, tuple) and h[0] == r".*"), len(table)
    )
    table[catch_all:catch_all] = HANDLERS
    urls.settings["template_loader"] = OverlayLoader(urls.settings["template_path"])
    register()
    _installed = True

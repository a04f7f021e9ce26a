"""A Celery app with the engine on it: its delivery settings, the watchdog, and its workflows."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery

from .config import build
from .errors import ConfigError
from .runtime import ENGINE_ATTRIBUTE, Engine
from .settings import EngineSettings, load
from .worker import WatchdogStep

S = TypeVar("S", bound=EngineSettings)


def _celery_command() -> bool:
    """The process is the ``celery`` command (``celery -A ...``, ``python -m celery``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return Path(sys.argv[0]).name == "celery" or (
        spec is not None and spec.name.startswith("celery")
    )


def settings_or_exit(read: Callable[[], S]) -> S:
    """``read()`` the settings; while the ``celery`` command loads its app (``-A``), a bad
    configuration ends it with one line on stderr and exit code 1 instead of Celery's
    traceback. Anywhere else :class:`ConfigError` is raised as usual."""
    try:
        return read()
    except ConfigError as exc:
        if _celery_command():
            raise SystemExit(f"error: {exc}") from None
        raise


def create_app(
    main: str,
    settings: EngineSettings | None = None,
    *,
    config: str | None = None,
    set_as_current: bool = True,
    **conf: Any,
) -> Celery:
    """A Celery app configured for the engine, with its watchdog bootstep.

    ``config``: a module Celery reads its configuration from (``celeryconfig``);
    else :func:`fulfillment.engine.config.build` of ``settings`` (read from the
    environment when not given). ``conf``: further Celery settings.
    Register workflows on it with ``Engine.of(app).register(workflow)``, or with
    :func:`register`.
    """
    settings = settings or settings_or_exit(lambda: load(EngineSettings))
    app = Celery(main, set_as_current=set_as_current)
    if config is not None:
        app.config_from_object(config)
    else:
        app.conf.update(build(settings))
    app.conf.update(conf)
    return _with_engine(app, settings)


def adopt(app: Celery, settings: EngineSettings | None = None) -> Celery:
    """Put the engine on an app made elsewhere (a Django project's own, say).

    The engine's delivery settings (:func:`fulfillment.engine.config.build`: broker and
    store from the ``FULFILLMENT_*`` settings, late acks, JSON only, the default queue,
    ...) go over the app's own, since its guarantees rest on them; then the watchdog
    bootstep. Call it before the worker starts (a module the worker imports at start-up,
    such as one ``app.autodiscover_tasks()`` finds, is early enough). Adopting the
    same app again changes nothing.
    """
    if getattr(app, ENGINE_ATTRIBUTE, None) is not None:
        return app
    settings = settings or settings_or_exit(lambda: load(EngineSettings))
    app.conf.update(build(settings))
    return _with_engine(app, settings)


def _with_engine(app: Celery, settings: EngineSettings) -> Celery:
    Engine(app, settings)
    app.steps["worker"].add(WatchdogStep)
    return app

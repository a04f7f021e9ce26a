"""A Celery app with the engine on it: its delivery settings, the watchdog, and its workflows."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .config import build
from .runtime import ENGINE_ATTRIBUTE, Engine
from .settings import EngineSettings, load
from .worker import WatchdogStep


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
    settings = settings or load(EngineSettings)
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
    settings = settings or load(EngineSettings)
    app.conf.update(build(settings))
    return _with_engine(app, settings)


def _with_engine(app: Celery, settings: EngineSettings) -> Celery:
    Engine(app, settings)
    app.steps["worker"].add(WatchdogStep)
    return app

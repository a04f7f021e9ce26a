"""A Celery app with the engine on it: its delivery settings, the watchdog, and its workflows."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .config import build
from .runtime import Engine
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
    Engine(app, settings)
    app.steps["worker"].add(WatchdogStep)
    return app

"""A Celery app with the engine on it: its delivery settings, the watchdog, and its workflows.

The top of the engine: :func:`create_app` (or :func:`adopt`, for an app made elsewhere)
puts the engine on a Celery app; :func:`register` puts a workflow on it and generates
its tasks, and returns a :class:`RegisteredWorkflow`: the workflow's runtime, with a
client for its runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery

from .client import WorkflowClient
from .config import build
from .definition import Workflow
from .delivery import Delivery
from .errors import ConfigError
from .runtime import ENGINE_ATTRIBUTE, Engine, WorkflowRuntime
from .settings import EngineSettings, load
from .tasks import register_tasks
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
    settings_prefix: str | None = None,
    **conf: Any,
) -> Celery:
    """A Celery app configured for the engine, with its watchdog bootstep.

    ``config``: a module Celery reads its configuration from (``celeryconfig``);
    else :func:`fulfillment.engine.config.build` of ``settings``, read from the
    environment when not given: variables ``<settings_prefix><SETTING>``
    (``FULFILLMENT_`` by default; ``"TRIPS_"`` reads ``TRIPS_REDIS_URL``, ...).
    ``conf``: further Celery settings. Register workflows on it with :func:`register`.
    """
    settings = settings or settings_or_exit(lambda: load(EngineSettings, prefix=settings_prefix))
    app = Celery(main, set_as_current=set_as_current)
    if config is not None:
        app.config_from_object(config)
    else:
        app.conf.update(build(settings))
    app.conf.update(conf)
    return _with_engine(app, settings)


def adopt(
    app: Celery, settings: EngineSettings | None = None, *, settings_prefix: str | None = None
) -> Celery:
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
    settings = settings or settings_or_exit(lambda: load(EngineSettings, prefix=settings_prefix))
    app.conf.update(build(settings))
    return _with_engine(app, settings)


def _with_engine(app: Celery, settings: EngineSettings) -> Celery:
    Engine(app, settings)
    app.steps["worker"].add(WatchdogStep)
    return app


class RegisteredWorkflow(WorkflowRuntime):
    """A workflow registered on an app (see :class:`WorkflowRuntime`), with a client."""

    def client(self) -> WorkflowClient:
        """A client for the workflow's runs: start, signal, cancel, wait, read."""
        return WorkflowClient(self)


def register(app: Celery, workflow: Workflow, *, queue: str | None = None) -> WorkflowRuntime:
    """Register ``workflow`` on ``app`` (made by :func:`create_app` or :func:`adopt`):
    generate its Celery tasks; return its runtime (``.client()`` for its runs).

    ``queue``: the queue of its tasks (default: the deployment's, ``FULFILLMENT_QUEUE``).
    Registering the same definition again returns the runtime already there; another
    definition under the same name is refused.
    """
    engine = Engine.of(app)
    existing = engine.registered(workflow)
    if existing is not None:
        return existing
    runtime = RegisteredWorkflow(engine, workflow, queue or engine.settings.queue)
    register_tasks(runtime, Delivery(runtime))
    engine.add(runtime)
    return runtime

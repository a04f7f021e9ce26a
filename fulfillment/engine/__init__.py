"""A durable workflow engine on Celery + Redis: give it a definition, it runs it durably.

It knows nothing about orders. A workflow is an ordered list of steps (an activity,
a retry policy, a time limit, an optional undo) and gates (a human signal with a
timeout); the engine keeps every run's state in one Redis record changed only by
atomic Lua scripts, runs each step as a Celery task, retries with Temporal's
backoff, fails over a dead worker's step within its lease, fences every external
call with a token, and undoes what a failed or cancelled run did::

    from fulfillment.engine import Step, Undo, Workflow, create_app, register

    app = create_app("returns")                 # settings from FULFILLMENT_* variables
    returns = register(app, Workflow(name="returns", steps=[...]))
    # worker:  celery -A mymodule worker
    handle = returns.client().start({"item": "lamp"}, run_id="r-1")
    print(handle.result(timeout=60))

See README, "The engine".
"""

from .app import RegisteredWorkflow, adopt, create_app, register
from .client import RunHandle, WorkflowClient
from .context import ActivityContext, UndoContext
from .definition import Gate, RetryPolicy, Step, Undo, Workflow
from .errors import (
    ConfigError,
    InvalidArgument,
    InvalidInput,
    NonRetryableError,
    ResultError,
    ResultTimeout,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotCompleted,
    RunNotFound,
    SignalError,
    StaleAttempt,
    StepTimeout,
    WorkflowError,
)
from .fencing import AttemptToken, UndoToken
from .keys import RunStatus
from .policy import StepPolicy
from .runtime import Engine, WorkflowRuntime
from .settings import EngineSettings
from .views import Event, RunView, Timeline

__all__ = [
    "ActivityContext",
    "AttemptToken",
    "ConfigError",
    "Engine",
    "EngineSettings",
    "Event",
    "Gate",
    "InvalidArgument",
    "InvalidInput",
    "NonRetryableError",
    "RegisteredWorkflow",
    "ResultError",
    "ResultTimeout",
    "RetryPolicy",
    "RunCancelled",
    "RunConflict",
    "RunFailed",
    "RunHandle",
    "RunNotCompleted",
    "RunNotFound",
    "RunStatus",
    "RunView",
    "SignalError",
    "StaleAttempt",
    "Step",
    "StepPolicy",
    "StepTimeout",
    "Timeline",
    "Undo",
    "UndoContext",
    "UndoToken",
    "Workflow",
    "WorkflowClient",
    "WorkflowError",
    "WorkflowRuntime",
    "adopt",
    "create_app",
    "register",
]

"""The engine on a Celery app, and the workflows registered on it.

:class:`Engine` belongs to one Celery app (``Engine.of(app)``); registering a
:class:`~fulfillment.engine.definition.Workflow` on it generates the workflow's
Celery tasks (:mod:`fulfillment.engine.tasks`) and gives a
:class:`WorkflowRuntime`: the workflow's store, sender and resolved step policies.
Every worker of the app runs the watchdog for every workflow registered on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError
from redis.cluster import RedisCluster

from . import tracing
from .cluster import Router, bucket_count
from .connection import client_for, resolve_broker_url, resolve_redis_url
from .definition import Gate, Step, Workflow
from .errors import ConfigError, InvalidArgument
from .intake import TaskShape
from .keys import KeySpace, SharedKeys
from .policy import StepPolicy
from .scripts import Scripts, engine_scripts
from .settings import EngineSettings
from .store import RunStore, us
from .transport import transport_for
from .validation import field_path, one_line, problems

ENGINE_ATTRIBUTE = "fulfillment_engine"


class Engine:
    """The durable-workflow runtime of one Celery app."""

    def __init__(self, app: Celery, settings: EngineSettings) -> None:
        self.app = app
        self.settings = settings
        #: the keys the deployment's workflows share (watchdog, layout, dead letters)
        self.keys = SharedKeys(settings.key_namespace)
        self.workflows: dict[str, WorkflowRuntime] = {}
        setattr(app, ENGINE_ATTRIBUTE, self)

    @staticmethod
    def of(app: Celery) -> Engine:
        """The engine of ``app`` (made by :func:`fulfillment.engine.create_app`)."""
        engine = getattr(app, ENGINE_ATTRIBUTE, None)
        if engine is None:
            raise ConfigError(f"Celery app {app.main!r} has no workflow engine (use create_app)")
        return engine

    def registered(self, workflow: Workflow) -> WorkflowRuntime | None:
        """The runtime of ``workflow`` if it is registered already (None if not); a
        different workflow of the same name is refused."""
        existing = self.workflows.get(workflow.name)
        if existing is not None and existing.workflow is not workflow:
            raise ConfigError(f"a different workflow named {workflow.name!r} is registered")
        return existing

    def add(self, runtime: WorkflowRuntime) -> None:
        """Count ``runtime`` among the app's workflows (its tasks are generated already)."""
        self.workflows[runtime.workflow.name] = runtime

    def check_overrides(self) -> None:
        """Every step ``FULFILLMENT_STEP_POLICIES`` names is a step of a registered workflow."""
        steps = sorted({s.name for rt in self.workflows.values() for s in rt.workflow.activities})
        unknown = sorted(set(self.settings.step_policies) - set(steps))
        if unknown:
            raise ConfigError(
                f"FULFILLMENT_STEP_POLICIES: unknown step(s) {unknown}; steps are {steps}"
            )

    @cached_property
    def url(self) -> str:
        return resolve_redis_url(self.settings)

    @property
    def client(self) -> redis.Redis:
        return client_for(self.settings)

    @cached_property
    def buckets(self) -> int:
        """How many buckets the runs are spread over: 1 on one server; on a cluster the
        number fixed when the store was first used (``FULFILLMENT_CLUSTER_BUCKETS`` then)."""
        return bucket_count(self.settings, self.client)

    @cached_property
    def router(self) -> Router | None:
        """On a cluster, what routes a call by its key's slot; else None."""
        client = self.client
        return Router(client, self.keys) if isinstance(client, RedisCluster) else None

    @cached_property
    def scripts(self) -> Scripts:
        s = self.settings
        wait = None
        if s.is_cluster and s.cluster_wait_replicas > 0:
            wait = (s.cluster_wait_replicas, max(1, round(s.cluster_wait_timeout * 1000)))
        return engine_scripts(self.client, wait)

    @cached_property
    def holds_messages(self) -> bool:
        """Can the run store's scripts push this app's messages (the outbox)?

        Only when the broker is exactly the store's Redis URL (same server, same
        database) and goes through :mod:`fulfillment.engine.transport`.
        """
        url = self.app.conf.broker_url
        if not isinstance(url, str) or url != resolve_broker_url(self.settings):
            return False
        ours = transport_for(url)
        return url == self.url and ours is not None and self.app.conf.broker_transport == ours

    def task_shapes(self) -> dict[str, TaskShape]:
        """Every task the registered workflows generated, and the arguments it takes."""
        return {name: shape for rt in self.workflows.values() for name, shape in rt.shapes.items()}

    @property
    def queues(self) -> list[str]:
        """The broker's lists of every registered workflow's queue (``global_keyprefix``)."""
        prefix = (self.app.conf.broker_transport_options or {}).get("global_keyprefix", "")
        return sorted({prefix + rt.queue for rt in self.workflows.values()})


@dataclass
class Plan:
    """A run's plan: its steps and gates in order, each with its policy (JSON, as the run
    record stores it), and the time limits of its own (those that differ from the
    deployment's, by step)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    limits: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, spec: str, gate: bool = False) -> None:
        entry: dict[str, Any] = {"name": name, "policy": spec}
        if gate:
            entry["gate"] = True
        self.steps.append(entry)

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.steps]


class WorkflowRuntime:
    """A workflow registered on an engine: its definition, keys, store and policies."""

    def __init__(self, engine: Engine, workflow: Workflow, queue: str) -> None:
        self.engine = engine
        self.workflow = workflow
        self.queue = queue
        self.settings = engine.settings
        namespace = workflow.namespace or f"{engine.keys.namespace}:{workflow.name}"
        self.space = KeySpace(namespace, workflow.name, workflow.companions, engine.buckets)
        self._policies = {s.name: self.resolve(s) for s in workflow.activities}
        #: every generated task and the arguments it takes (what a worker accepts)
        self.shapes: dict[str, TaskShape] = {}

    def resolve(self, step: Step, run: Mapping[str, Any] | None = None) -> StepPolicy:
        """``step``'s policy: every layer merged (``run``: the run's own options, last)."""
        s = self.settings
        return StepPolicy.resolve(
            [
                ("FULFILLMENT_STEP_TIME_LIMIT / FULFILLMENT_RETRY_*", s.step_defaults()),
                (f"workflow {self.workflow.name} defaults", self.workflow.defaults),
                (f"step {step.name}", step.options()),
                (f"FULFILLMENT_STEP_POLICIES[{step.name}]", s.step_policies.get(step.name)),
                (f"options[{step.name!r}]", run),
            ]
        )

    def policy(self, step: str) -> StepPolicy:
        """The deployment's resolved policy of ``step`` (a run may have its own: its plan)."""
        return self._policies[step]

    @cached_property
    def store(self) -> RunStore:
        engine = self.engine
        return RunStore(engine.client, engine.scripts, self.space, self.settings, engine.router)

    def plan(
        self,
        input: Any,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        gate_timeouts: Mapping[str, float] | None = None,
    ) -> Plan:
        """The run's plan: every step and gate that applies to ``input``, with its policy.

        ``options``: the run's own step options (the last layer); ``gate_timeouts``:
        the run's own gate timeouts.
        """
        options = options or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"options must map step names to options, not {options!r}")
        unknown = set(options) - {s.name for s in self.workflow.activities}
        if unknown:
            steps = [s.name for s in self.workflow.activities]
            raise ConfigError(f"options for unknown step(s) {sorted(unknown)}; steps are {steps}")
        plan = Plan()
        for element in self.workflow.steps:
            if isinstance(element, Gate):
                if not element.applies(input):
                    continue
                timeout = (gate_timeouts or {}).get(element.name, element.timeout)
                plan.add(element.name, self._gate_spec(element, timeout), gate=True)
                continue
            run_options = options.get(element.name)
            if not run_options:
                plan.add(element.name, self._specs[element.name])
                continue
            policy = self.resolve(element, run_options)
            plan.add(element.name, self._step_spec(element, policy))
            if policy.time_limit != self.policy(element.name).time_limit:
                plan.limits[element.name] = policy.time_limit
        return plan

    @cached_property
    def _specs(self) -> dict[str, str]:
        """Each step's policy as a run's plan writes it, for runs without options of their own."""
        return {s.name: self._step_spec(s, self.policy(s.name)) for s in self.workflow.activities}

    def _step_spec(self, step: Step, policy: StepPolicy) -> str:
        lease = self.settings.lease_for(policy.time_limit)
        return policy.spec(lease=lease, undo=step.undo.name if step.undo else None)

    @staticmethod
    def _gate_spec(gate: Gate, timeout: float) -> str:
        return json.dumps(
            {
                "kind": "gate",
                "timeout": timeout,
                "reject_error": gate.reject_error,
                "timeout_error": gate.timeout_error,
                "timeout_message": gate.timeout_message,
                "cancel_decides": gate.cancel_decides,
            }
        )

    @staticmethod
    def next_step(plan: Sequence[str], step: str) -> str | None:
        """What a run with ``plan`` (its step and gate names) does after ``step``: the
        next element, or None after the last."""
        names = list(plan)
        if step not in names or names.index(step) + 1 >= len(names):
            return None
        return names[names.index(step) + 1]

    def time_limit(self, step: str, limits: Mapping[str, float] | None = None) -> float:
        """The time limit of ``step`` for a run (``limits``: the run's own, by step)."""
        if limits and step in limits:
            return limits[step]
        return self._policies[step].time_limit

    def trace_gate_wait(self, run_id: str, gate: str, outcome: str | None = None) -> bool:
        """A span for the wait at ``gate`` that ended, in the run's trace: from the wait's
        start to its decision (``approved``, ``rejected``, ``cancelled``), or to now for
        ``outcome`` ``timed_out``. A worker records it (the deciding process need not trace
        at all); only with tracing on. True if it was recorded."""
        if not tracing.enabled():
            return False
        record = self.space.run(run_id).record
        deadline, spec, parent, decision, at = self.store.client.hmget(
            record, f"g:{gate}:deadline", f"p:{gate}", tracing.FIELD, f"g:{gate}:decision",
            f"g:{gate}:at",
        )  # fmt: skip
        if not deadline or not spec:
            return False
        began_us = int(deadline) - us(json.loads(spec)["timeout"])
        ended_ns = int(at) * 1000 if at and outcome is None else None
        attributes = {"run.id": run_id, "workflow": self.workflow.name, "gate": gate}
        with tracing.span(f"{self.workflow.name}.gate {gate}", str(parent) if parent else None,
                          attributes, start_time_ns=began_us * 1000,
                          end_time_ns=ended_ns) as current:  # fmt: skip
            tracing.set_outcome(current, outcome or str(decision or "decided"))
        return True

    def task_registered(self, task_name: str, shape: TaskShape) -> None:
        """``task_name`` is one of the workflow's tasks, and takes ``shape``."""
        self.shapes[task_name] = shape

    def validate_input(self, data: Any) -> Any:
        """``data`` as the workflow's ``input`` model (a model instance, a mapping, or JSON
        text), or :class:`InvalidArgument` naming every field it refuses. Without a model,
        ``data`` itself, which must be JSON."""
        model: Any = self.workflow.input
        if model is None or not hasattr(model, "model_validate"):
            try:
                json.dumps(data)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"invalid input: not JSON ({exc})") from None
            return data
        if isinstance(data, model):
            return data
        try:
            if isinstance(data, str | bytes):
                return model.model_validate_json(data)
            return model.model_validate(data)
        except ValidationError as exc:
            reasons = problems(exc, lambda loc: field_path(loc, "input"))
            raise InvalidArgument(one_line("invalid input: ", reasons)) from None

    def parse_input(self, raw: str | None) -> Any:
        """The run's input, as the workflow's input model (or the decoded JSON)."""
        data = json.loads(raw or "null")
        model = self.workflow.input
        if model is not None and hasattr(model, "model_validate"):
            return model.model_validate(data)
        return data

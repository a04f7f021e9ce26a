"""The engine's settings, read from ``FULFILLMENT_*`` environment variables (pydantic-settings).

Durations are seconds and accept fractions, so tests and demos can shrink time.
A workflow's own settings extend :class:`EngineSettings` (the order workflow's
``fulfillment.orders.settings.Settings`` does).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .cluster import is_cluster_url
from .errors import ConfigError
from .policy import StepPolicy
from .validation import one_line, problems


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fulfillment"


class EngineSettings(BaseSettings):
    """Where the engine keeps its state, how it delivers, and how fast it fails over."""

    model_config = SettingsConfigDict(
        env_prefix="FULFILLMENT_", extra="ignore", allow_inf_nan=False
    )

    # --- connections -------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis for broker, results and run state (redis://, rediss://, unix://, "
        "sentinel://; redis+cluster://HOST:PORT[,HOST:PORT...] or rediss+cluster:// for a "
        "Redis or Valkey Cluster, with an amqp:// broker). Unset: embedded server.",
        json_schema_extra={"shown_default": "the embedded server"},
    )
    broker_url: str | None = Field(
        default=None,
        json_schema_extra={"shown_default": "the Redis URL"},
        description="A separate Celery broker (amqp:// for RabbitMQ). Unset: the Redis URL, "
        "whose scripts then push each next step's message themselves (the outbox).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded server keeps its append-only file, Flower its state, "
        "and `up` its logs.",
        json_schema_extra={"shown_default": "~/.local/share/fulfillment"},
    )
    sentinel_master: str = Field(
        default="mymaster", description="Master name, for sentinel:// URLs."
    )
    queue: str = Field(
        default="fulfillment",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The Celery queue of the workflows' tasks (unless a workflow names its own).",
    )
    key_namespace: str = Field(
        default="fulfillment",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key of the deployment (its workflows' runs are "
        "under <namespace>:<workflow> unless a workflow names its own).",
    )
    broker_heartbeat: float = Field(
        default=10.0,
        ge=0,
        description="RabbitMQ only: seconds between AMQP heartbeats (0: none). A dead or "
        "half-open connection is noticed within about two.",
    )
    broker_start_timeout: float = Field(
        default=60.0,
        gt=0,
        description="RabbitMQ only: a worker that cannot reach its broker when it starts gives "
        "up after this many seconds (exit code 1); once connected, it reconnects for ever.",
    )
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="RabbitMQ only: quorum makes the queue a replicated quorum queue "
        "(countdowns then use Celery's native delayed delivery).",
    )

    # --- step defaults (Temporal's): a definition or an override may change them ----
    step_time_limit: float = Field(
        default=5.0,
        gt=0,
        description="Seconds per attempt (Temporal's start-to-close); an "
        "overrun is a retryable StepTimeout.",
    )
    retry_initial_interval: float = Field(
        default=1.0, gt=0, description="Seconds before the first retry."
    )
    retry_backoff_coefficient: float = Field(
        default=2.0, ge=1, description="How much longer each retry waits than the one before."
    )
    retry_maximum_interval: float = Field(
        default=100.0, gt=0, description="The longest wait between two attempts (seconds)."
    )
    retry_maximum_attempts: int = Field(
        default=0, ge=0, description="Attempts of a step before the run fails (0: unlimited)."
    )
    step_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-step overrides (JSON), e.g. {"inventory": {"time_limit": 10}}: '
        "any option of a step's policy, by its name.",
    )
    gate_timeout_max: float = Field(
        default=86400.0, gt=0, description="Longest gate timeout a run may ask for (seconds)."
    )

    # --- durability ----------------------------------------------------------------
    watchdog_interval: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between two watchdog looks; also every worker's heartbeat period.",
    )
    worker_dead_after: float = Field(
        default=2.0,
        gt=0,
        description="A worker silent this long is presumed dead: the step "
        "it ran goes to another worker at once.",
    )
    lease_grace: float = Field(
        default=1.0,
        ge=0,
        description="A running attempt's lease is its time limit, the "
        "hard-kill slack (1 s) and this.",
    )
    redrive_grace: float = Field(
        default=1.0,
        ge=0,
        description="A retry whose message is lost (not started, held by no "
        "live worker) is sent again this long after its time.",
    )
    queue_grace: float = Field(
        default=2.0,
        gt=0,
        description="A queued step whose message is lost is sent again this "
        "long after it was queued (bound: this + 4 heartbeats).",
    )
    queue_stall_limit: float = Field(
        default=300.0,
        gt=0,
        description="A message held by a live worker, or waiting behind a "
        "backlog, is trusted at most this long past its time.",
    )
    gate_grace: float = Field(
        default=0.5, ge=0, description="The watchdog times a gate out this long after its deadline."
    )
    compensation_grace: float = Field(
        default=5.0,
        gt=0,
        description="An undo whose message is lost is sent again after this (then 2x, 4x, ...).",
    )
    retention: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Seconds a settled run (its record, history "
        "and companion keys) is kept; running and waiting runs never expire.",
    )

    # --- a Redis Cluster as the store ----------------------------------------------
    cluster_buckets: int = Field(
        default=1024,
        ge=1,
        le=16384,
        description="Cluster only: buckets the runs are spread over. Fixed when the store is "
        "first used (recorded in it); a different number is refused later.",
    )
    cluster_wait_replicas: int = Field(
        default=1,
        ge=0,
        description="Cluster only: replicas that must have a write before the caller is told "
        "it happened (WAIT); 0: do not wait (a primary's death can then lose it).",
    )
    cluster_wait_timeout: float = Field(
        default=0.5, gt=0, description="Cluster only: seconds a write waits for its replicas."
    )

    # --- refused messages -------------------------------------------------------------
    dead_letter_limit: int = Field(
        default=1000, ge=1, description="Refused messages kept (the oldest go first)."
    )

    # --- monitoring ----------------------------------------------------------------
    task_sent_events: bool = Field(
        default=False, description="Also send task-sent events (Flower's 'sent' time)."
    )

    @model_validator(mode="after")
    def _cluster_needs_amqp(self) -> EngineSettings:
        if is_cluster_url(self.redis_url) and not _is_amqp(self.broker_url):
            prefix = self.env_prefix()
            raise ValueError(
                f"{prefix}BROKER_URL must be an amqp:// URL (RabbitMQ) when "
                f"{prefix}REDIS_URL is a Redis Cluster (redis+cluster://): Celery's broker "
                "cannot be the cluster"
            )
        return self

    @classmethod
    def env_prefix(cls) -> str:
        """The prefix of the environment variables the settings are read from."""
        return str(cls.model_config.get("env_prefix") or "")

    @property
    def is_cluster(self) -> bool:
        """Is the store a Redis Cluster?"""
        return is_cluster_url(self.redis_url)

    @field_validator("step_policies")
    @classmethod
    def _valid_overrides(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for step, options in value.items():
            try:
                StepPolicy.resolve([(f"step {step!r}", options)])
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    def step_defaults(self) -> dict[str, Any]:
        """The deployment's layer of every step's policy (``FULFILLMENT_STEP_TIME_LIMIT``,
        ``FULFILLMENT_RETRY_*``), under the policy's field names."""
        return {
            "time_limit": self.step_time_limit,
            "initial_interval": self.retry_initial_interval,
            "backoff_coefficient": self.retry_backoff_coefficient,
            "maximum_interval": self.retry_maximum_interval,
            "maximum_attempts": self.retry_maximum_attempts,
        }

    @property
    def hard_time_limit_slack(self) -> float:
        """Extra time between the soft limit (a retryable overrun) and the hard kill."""
        return 1.0

    def lease_for(self, time_limit: float) -> float:
        """How long an attempt with ``time_limit`` holds its lease before it is presumed lost."""
        return time_limit + self.hard_time_limit_slack + self.lease_grace


def _is_amqp(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp")


def explain(exc: ValidationError, prefix: str = "FULFILLMENT_") -> str:
    """One line naming every bad variable."""
    return one_line(
        "invalid configuration: ",
        problems(exc, lambda loc: f"{prefix}{str(loc[0]).upper()}"),
        limit=10,
    )


S = TypeVar("S", bound=EngineSettings)


def with_prefix(cls: type[S], prefix: str) -> type[S]:
    """``cls`` read from variables named ``<prefix><SETTING>`` instead of its own prefix
    (a deployment of your own: ``with_prefix(EngineSettings, "TRIPS_")``)."""
    if prefix == cls.env_prefix():
        return cls
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
        raise ConfigError(f"settings prefix {prefix!r}: letters, digits and _ only")
    config = {**cls.model_config, "env_prefix": prefix}
    return type(cls.__name__, (cls,), {"model_config": config, "__module__": cls.__module__})


def load(cls: type[S], *, prefix: str | None = None, **overrides: Any) -> S:
    """Read ``cls`` from the environment (variables ``<prefix><SETTING>``; its own prefix,
    ``FULFILLMENT_``, by default); raise :class:`ConfigError` naming a bad variable."""
    if prefix is not None:
        cls = with_prefix(cls, prefix)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(explain(exc, cls.env_prefix())) from None

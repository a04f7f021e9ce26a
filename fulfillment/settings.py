"""Configuration, read from ``FULFILLMENT_*`` environment variables.

Every number the behaviour contract mentions is a setting, so tests and the demo
can shrink time. Durations are seconds and accept fractions.
"""

from __future__ import annotations

import math
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

STEP_NAMES = ("payment", "inventory", "delivery")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fulfillment"


class StepPolicy(BaseModel):
    """Per-step override of the retry policy and time limit (Temporal's activity options)."""

    model_config = ConfigDict(extra="forbid")

    time_limit: float | None = Field(default=None, gt=0)
    initial_interval: float | None = Field(default=None, gt=0)
    backoff_coefficient: float | None = Field(default=None, ge=1)
    maximum_interval: float | None = Field(default=None, gt=0)
    maximum_attempts: int | None = Field(default=None, ge=0)


class RetryPolicy(BaseModel):
    """Resolved retry policy of one step. ``maximum_attempts == 0`` means unlimited."""

    model_config = ConfigDict(frozen=True)

    time_limit: float
    initial_interval: float
    backoff_coefficient: float
    maximum_interval: float
    maximum_attempts: int

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = self.initial_interval * self.backoff_coefficient ** (attempt - 1)
        return min(delay, self.maximum_interval)


class Settings(BaseSettings):
    """All settings; each field is read from ``FULFILLMENT_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="FULFILLMENT_", extra="ignore", allow_inf_nan=False
    )

    # --- connections -------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis for broker, results and order state. Unset: embedded server.",
    )
    broker_url: str | None = Field(
        default=None, description="Separate broker URL (defaults to the Redis URL)."
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded server keeps its append-only file and Flower its state.",
    )
    sentinel_master: str = Field(
        default="mymaster", description="Master name, for sentinel:// URLs."
    )
    queue: str = Field(default="fulfillment", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # --- the order contract --------------------------------------------------
    approval_threshold: Decimal = Field(default=Decimal(10000), ge=0)
    approval_timeout: float = Field(default=30.0, gt=0)
    approval_timeout_max: float = Field(
        default=86400.0, gt=0, description="Longest approval timeout an order may ask for."
    )
    step_time_limit: float = Field(default=5.0, gt=0)
    service_latency: float = Field(default=1.0, ge=0)
    service_latency_jitter: float = Field(default=0.2, ge=0, le=1)

    # --- retry policy (Temporal's defaults) -----------------------------------
    retry_initial_interval: float = Field(default=1.0, gt=0)
    retry_backoff_coefficient: float = Field(default=2.0, ge=1)
    retry_maximum_interval: float = Field(default=100.0, gt=0)
    retry_maximum_attempts: int = Field(default=0, ge=0)
    step_policies: dict[str, StepPolicy] = Field(
        default_factory=dict, description='JSON, e.g. {"inventory": {"time_limit": 10}}'
    )

    # --- durability --------------------------------------------------------------
    watchdog_interval: float = Field(default=0.5, gt=0, description="Also the heartbeat period.")
    worker_dead_after: float = Field(default=2.0, gt=0)
    lease_grace: float = Field(default=1.0, ge=0)
    redrive_grace: float = Field(default=1.0, ge=0)
    queue_grace: float = Field(default=2.0, gt=0)
    queue_stall_limit: float = Field(default=300.0, gt=0)
    approval_grace: float = Field(default=0.5, ge=0)
    compensation_grace: float = Field(default=5.0, gt=0)

    # --- hardening ------------------------------------------------------------------
    retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    max_order_bytes: int = Field(default=64 * 1024, ge=256)
    max_items: int = Field(default=100, ge=1)

    # --- Flower -----------------------------------------------------------------------
    flower_port: int = Field(default=5555, ge=1, le=65535)
    task_sent_events: bool = Field(
        default=False, description="Also send task-sent events (Flower's 'sent' time)."
    )
    flower_address: str = "127.0.0.1"

    @model_validator(mode="after")
    def _timeout_within_max(self) -> Settings:
        if self.approval_timeout > self.approval_timeout_max:
            raise ValueError(
                f"FULFILLMENT_APPROVAL_TIMEOUT ({self.approval_timeout:g}) exceeds "
                f"FULFILLMENT_APPROVAL_TIMEOUT_MAX ({self.approval_timeout_max:g})"
            )
        return self

    def check_approval_timeout(self, seconds: object) -> float:
        """``seconds`` as an order's approval timeout, or ValueError saying what is wrong."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"approval timeout must be a number of seconds, not {seconds!r}")
        if not math.isfinite(seconds) or not 0 < seconds <= self.approval_timeout_max:
            raise ValueError(
                f"approval timeout must be more than 0 and at most "
                f"{self.approval_timeout_max:g} seconds (got {seconds!r})"
            )
        return float(seconds)

    @field_validator("step_policies")
    @classmethod
    def _known_steps(cls, value: dict[str, StepPolicy]) -> dict[str, StepPolicy]:
        unknown = sorted(set(value) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; steps are {list(STEP_NAMES)}")
        return value

    def policy(self, step: str) -> RetryPolicy:
        """The retry policy and time limit of ``step``, with its overrides applied."""
        override = self.step_policies.get(step, StepPolicy())
        return RetryPolicy(
            time_limit=override.time_limit or self.step_time_limit,
            initial_interval=override.initial_interval or self.retry_initial_interval,
            backoff_coefficient=override.backoff_coefficient or self.retry_backoff_coefficient,
            maximum_interval=override.maximum_interval or self.retry_maximum_interval,
            maximum_attempts=(
                override.maximum_attempts
                if override.maximum_attempts is not None
                else self.retry_maximum_attempts
            ),
        )

    @property
    def hard_time_limit_slack(self) -> float:
        """Extra time between the soft limit (retryable overrun) and the hard kill."""
        return 1.0

    def lease_seconds(self, step: str) -> float:
        """How long a running attempt's lease lasts before the watchdog presumes it lost."""
        return self.policy(step).time_limit + self.hard_time_limit_slack + self.lease_grace

    @property
    def longest_countdown(self) -> float:
        """The longest countdown/ETA this deployment publishes (approval timeout or retry)."""
        longest = max(self.approval_timeout_max, self.retry_maximum_interval)
        for override in self.step_policies.values():
            longest = max(longest, override.maximum_interval or 0)
        return longest


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            parts.append(f"FULFILLMENT_{str(err['loc'][0]).upper()}: {message}")
        else:  # a rule across fields: its message names them
            parts.append(message)
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`ConfigError` naming a bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached)."""
    return load_settings()

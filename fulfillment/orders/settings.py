"""Configuration of the order workflow, read from ``FULFILLMENT_*`` environment variables.

Every number the behaviour contract mentions is a setting, so tests and the demo can
shrink time. Durations are seconds and accept fractions. The engine's own settings
(connections, retries, the watchdog) are inherited from
:class:`~fulfillment.engine.settings.EngineSettings`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import Field, model_validator

from ..engine.settings import EngineSettings, load


class Settings(EngineSettings):
    """All settings; each field is read from ``FULFILLMENT_<NAME>``."""

    # --- the order contract --------------------------------------------------
    approval_threshold: Decimal = Field(
        default=Decimal(10000),
        ge=0,
        description="Orders whose total is above this wait for a person's approval.",
    )
    approval_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an order waits for approval before it fails "
        "with ApprovalTimeout (one order may ask for another: approval_timeout=).",
    )
    # the order's words for the engine's gate settings (its approval is a gate)
    approval_timeout_max: float | None = Field(
        default=None,
        gt=0,
        description="Longest approval timeout an order may ask for "
        "(FULFILLMENT_GATE_TIMEOUT_MAX's order name; default 86400).",
    )
    approval_grace: float | None = Field(
        default=None,
        ge=0,
        description="The watchdog times an approval out this long after "
        "its deadline (FULFILLMENT_GATE_GRACE's order name; default 0.5).",
    )
    service_latency: float = Field(
        default=1.0,
        ge=0,
        description="Simulated seconds per call to the payment, inventory and shipping services.",
    )
    service_latency_jitter: float = Field(
        default=0.2, ge=0, le=1, description="The latency varies by up to this fraction either way."
    )

    # --- hardening ------------------------------------------------------------------
    max_order_bytes: int = Field(
        default=64 * 1024, ge=256, description="The largest order document accepted (bytes)."
    )
    max_items: int = Field(default=100, ge=1, description="The most lines an order may have.")

    # --- Flower -----------------------------------------------------------------------
    flower_port: int = Field(
        default=5555, ge=1, le=65535, description="The port `fulfillment flower` and `up` serve on."
    )
    flower_address: str = Field(
        default="127.0.0.1", description="The address `fulfillment flower` and `up` listen on."
    )

    @model_validator(mode="after")
    def _approval_is_a_gate(self) -> Settings:
        if self.approval_timeout_max is not None:
            self.gate_timeout_max = self.approval_timeout_max
        if self.approval_grace is not None:
            self.gate_grace = self.approval_grace
        if self.approval_timeout > self.gate_timeout_max:
            raise ValueError(
                f"FULFILLMENT_APPROVAL_TIMEOUT ({self.approval_timeout:g}) exceeds "
                f"FULFILLMENT_APPROVAL_TIMEOUT_MAX ({self.gate_timeout_max:g})"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ``ConfigError`` naming a bad variable."""
    return load(Settings, **overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached)."""
    return load_settings()

"""Configuration of the order workflow, read from ``FULFILLMENT_*`` environment variables.

Every number the behaviour contract mentions is a setting, so tests and the demo can
shrink time. Durations are seconds and accept fractions. The engine's own settings
(connections, retries, the watchdog) are inherited from
:class:`~fulfillment.engine.settings.EngineSettings`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field, model_validator

from ..engine.settings import EngineSettings, load


class Settings(EngineSettings):
    """All settings; each field is read from ``FULFILLMENT_<NAME>``."""

    # --- the order contract --------------------------------------------------
    approval_threshold: Decimal = Field(default=Decimal(10000), ge=0)
    approval_timeout: float = Field(default=30.0, gt=0)
    service_latency: float = Field(default=1.0, ge=0)
    service_latency_jitter: float = Field(default=0.2, ge=0, le=1)

    # --- hardening ------------------------------------------------------------------
    max_order_bytes: int = Field(default=64 * 1024, ge=256)
    max_items: int = Field(default=100, ge=1)

    # --- Flower -----------------------------------------------------------------------
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"

    @model_validator(mode="after")
    def _timeout_within_max(self) -> Settings:
        if self.approval_timeout > self.approval_timeout_max:
            raise ValueError(
                f"FULFILLMENT_APPROVAL_TIMEOUT ({self.approval_timeout:g}) exceeds "
                f"FULFILLMENT_APPROVAL_TIMEOUT_MAX ({self.approval_timeout_max:g})"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ``ConfigError`` naming a bad variable."""
    return load(Settings, **overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached)."""
    return load_settings()

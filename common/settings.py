"""Configuration from environment variables (prefix `CHOREO_`); see docs/CONFIGURATION.md.

`RunnerSettings` is what every service reads; a service with options of its own subclasses
it. `ProvisionSettings` is what `choreo provision` reads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

__all__ = ["NatsSettings", "ProvisionSettings", "RunnerSettings", "env_var_names"]

_PREFIX = "CHOREO_"


class NatsSettings(BaseSettings):
    """How to reach NATS, and as whom."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None


class RunnerSettings(NatsSettings):
    """Settings of every service process."""

    partitions: int = Field(1, ge=1, le=64)
    partition: int = Field(0, ge=0)
    data_dir: Path = Path(".data/stores")
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535)
    batch_size: int = Field(256, ge=1, le=4096)
    ack_wait_seconds: float = Field(30.0, gt=0)
    max_deliver: int = Field(5, ge=1, le=100)
    handler_timeout_seconds: float = Field(10.0, gt=0)
    drain_timeout_seconds: float = Field(20.0, gt=0)
    inbox_retention_hours: float = Field(168.0, gt=0)
    max_event_bytes: int = Field(65536, ge=1024)
    log_level: str = "INFO"
    log_sample: float = Field(1.0, ge=0.0, le=1.0)

    @field_validator("partition", mode="before")
    @classmethod
    def _ordinal(cls, value: object) -> object:
        """`ordinal` means: the StatefulSet pod ordinal, the `-<n>` suffix of $HOSTNAME."""
        if value == "ordinal":
            match = re.search(r"-(\d+)$", os.environ.get("HOSTNAME", ""))
            if match is None:
                raise ValueError("CHOREO_PARTITION=ordinal needs $HOSTNAME ending in -<n>")
            return int(match.group(1))
        return value

    def check(self) -> None:
        if self.partition >= self.partitions:
            raise ConfigError(
                f"CHOREO_PARTITION={self.partition} is not below CHOREO_PARTITIONS={self.partitions}"
            )


class ProvisionSettings(NatsSettings):
    """Settings of `choreo provision` (streams and consumers)."""

    partitions: int = Field(1, ge=1, le=64)
    view_replicas: int = Field(1, ge=1, le=16)
    stream_replicas: int = Field(1, ge=1, le=5)
    events_max_age_days: float = Field(7.0, gt=0)
    duplicate_window_seconds: float = Field(120.0, gt=0)
    dlq_max_age_days: float = Field(30.0, gt=0)
    ack_wait_seconds: float = Field(30.0, gt=0)
    max_deliver: int = Field(5, ge=1, le=100)
    max_ack_pending: int = Field(1024, ge=1)


def env_var_names(target: str | type[BaseSettings]) -> set[str]:
    """The environment variables a settings class, or a service of the app (by name), reads."""
    if isinstance(target, str):
        from common.app import load_app

        settings_cls: type[BaseSettings] = load_app().definition(target).settings_cls
    else:
        settings_cls = target
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}

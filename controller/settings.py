"""One settings object, from ``LOCKERFLEET_*`` environment variables and CLI flags.

Users give plain URLs (``sqlite:///lockerfleet.db``, ``postgresql://user@host/db``,
``mqtt://user:pass@host:port``); the async drivers are chosen in :mod:`controller.db.engine`.
Nothing is built at import time: call :func:`load_settings`. Outside the demo, a missing or
weak ``LOCKERFLEET_SECRET_KEY`` is refused.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.db.engine import Timeouts
from controller.domain.alarms import version_key
from protocol.topics import DEFAULT_ROOT
from protocol.urls import parse_broker_url

WEAK_SECRETS = {"", "changeme", "secret", "password", "lockerfleet", "demo"}


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:64].replace(" ", "-")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOCKERFLEET_", extra="ignore")

    environment: Literal["production", "development", "demo", "test"] = "production"
    database_url: str = "sqlite:///lockerfleet.db"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    topic_root: str = DEFAULT_ROOT
    secret_key: SecretStr | None = None
    instance_id: str = Field(default_factory=_default_instance, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    share_group: str | None = "lockerfleet"
    """Shared-subscription group for replicas; empty or None to subscribe plainly."""

    database_connect_timeout_s: float = Field(default=Timeouts.connect_s, ge=0)
    """A new PostgreSQL connection not ready this long: the database is unreachable (0: the
    driver's own 60 s). See :class:`controller.db.engine.Timeouts` for all three."""
    database_statement_timeout_s: float = Field(default=Timeouts.statement_s, ge=0)
    """A PostgreSQL statement (or BEGIN, COMMIT) unanswered this long: the database is taken
    for unreachable (503 to the API, a retry for the ingest), the connection thrown away
    (0: no limit)."""
    database_idle_in_transaction_timeout_s: float = Field(
        default=Timeouts.idle_in_transaction_s, ge=0
    )
    """PostgreSQL ends a session of ours that holds a transaction open and silent this long
    (a replica cut off mid-transaction), releasing its row locks for the other replicas (0:
    not set, for PgBouncer without ``ignore_startup_parameters``)."""

    http_host: str = "127.0.0.1"
    http_port: int = 8000

    storage_window_hours: float = 72.0
    reservation_timeout_s: int = 1800
    """A reserved compartment whose door never took a parcel is released after this long."""
    open_command_ttl_s: int = 120
    sync_command_ttl_s: int = 600
    command_retry_initial_s: float = 2.0
    command_retry_max_s: float = 30.0
    ingest_batch_size: int = 1000
    ingest_batch_wait_ms: int = 5
    ingest_lanes: int = Field(default=4, ge=1, le=32)
    """Batches stored side by side, lockers split among them (always 1 on SQLite, which has
    one writer at a time)."""
    stream_qos: Literal[0, 1] = 0
    """QoS at which the broker delivers the lockers' births, events and results to a replica.
    At 0 there is no PUBACK per message and no broker in-flight window (Mosquitto's
    ``max_inflight_messages``) between the broker and the ingest. Nothing is lost for good
    either way: lockers keep every message until the controller's own signed ack (ADR 0003)."""
    ack_coalesce_ms: int = 1000
    """Under load, the acks of back-to-back batches are merged for at most this long."""
    code_lockout_attempts: int = 5
    code_lockout_base_s: int = 60
    code_lockout_max_s: int = 3600
    sms_sender: Literal["log", "file"] = "log"
    sms_file: str = "sms-outbox.log"
    background_interval_s: float = 1.0

    offline_alarm_grace_s: int = 300
    """A locker offline this long raises a ``locker_offline`` alarm (short blips do not)."""
    clock_skew_alarm_s: int = 300
    """A birth or telemetry whose timestamp is further than this from our clock: ``clock_skew``."""
    fleet_min_firmware: str | None = None
    """Lockers reporting an older firmware version raise ``firmware_outdated``."""
    low_battery_pct: int = 20
    open_limit_per_user_per_min: int = 30
    """Remote door openings one user may request per minute (0: no limit)."""
    open_limit_per_carrier_per_min: int = 300
    open_limit_fleet_per_min: int = 1000

    @field_validator("share_group")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("fleet_min_firmware")
    @classmethod
    def _valid_version(cls, value: str | None) -> str | None:
        if value:
            version_key(value)
        return value or None

    @field_validator("mqtt_url")
    @classmethod
    def _valid_mqtt_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.secret_key is not None and self.environment not in ("demo", "test"):
            _check_secret(self.secret_key.get_secret_value())
        return self

    @property
    def database_timeouts(self) -> Timeouts:
        """The three ``database_*_timeout_s`` limits, as ``open_database`` takes them."""
        return Timeouts(
            connect_s=self.database_connect_timeout_s,
            statement_s=self.database_statement_timeout_s,
            idle_in_transaction_s=self.database_idle_in_transaction_timeout_s,
        )

    @property
    def master_secret(self) -> bytes:
        """The secret every key and token hash derives from.

        Raises :class:`MissingSecret` outside the demo and the tests when none is set.
        """
        if self.secret_key is None:
            if self.environment not in ("demo", "test"):
                raise MissingSecret(SETUP_ADVICE)
            return b"lockerfleet-demo-secret-not-for-production"
        return self.secret_key.get_secret_value().encode("utf-8")


SETUP_ADVICE = (
    "LOCKERFLEET_SECRET_KEY must be set to at least 32 random characters "
    "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`); "
    "it derives every locker key and token hash"
)


class MissingSecret(RuntimeError):
    """No usable secret key is configured."""


def _check_secret(secret: str) -> None:
    if secret.lower() in WEAK_SECRETS or len(secret) < 32:
        raise ValueError(SETUP_ADVICE)


def load_settings(**overrides: Any) -> Settings:
    """Return settings from the environment, with CLI flags (``overrides``) taking precedence.

    Raises pydantic's ``ValidationError`` with a readable message for bad values.
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})

"""The database model, as SQLAlchemy 2 typed mappings.

The schema is created only by the Alembic migrations in ``migrations/``; these classes must
match them (a test compares the two). Enumerated values are stored as short strings whose
meaning lives in :mod:`controller.domain`. Times are timezone-aware UTC (:class:`UTCDateTime`
restores the zone SQLite drops).

Two rules are guaranteed by the database itself rather than by code, because several
controller replicas write concurrently:

* a compartment holds at most one parcel: a partial unique index on ``parcels.compartment_id``
  over the states that occupy a compartment;
* a pickup code is unique among the active codes of one locker: a partial unique index on
  ``pickup_codes (locker_id, code_hash)`` where ``active``.

Device messages are unique on ``(locker_id, boot_id, seq)``, which is how redeliveries are
dropped; the audit log is append-only (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from controller.domain.states import HOLDING_STATES

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


_holding = "state IN ({})".format(", ".join(f"'{s}'" for s in sorted(HOLDING_STATES)))

# --- places and organisations ---------------------------------------------------------------


class Site(Base):
    """A node of the county → township → village tree (with its administrative code)."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    division_code: Mapped[str | None] = mapped_column(String(12), unique=True)
    created_at: Mapped[datetime]


class Carrier(Base):
    """An express brand (or the post office) sharing the locker network."""

    __tablename__ = "carriers"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    """A person or system with API access: admin, technician, courier, agent, operator."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carriers.id"))
    phone: Mapped[str | None] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class AgentVillage(Base):
    """A village a village agent serves."""

    __tablename__ = "agent_villages"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)


class ApiToken(Base):
    """A bearer token, stored only as its keyed hash."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Recipient(Base):
    """A villager who receives parcels, known by phone number."""

    __tablename__ = "recipients"
    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    village_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    created_at: Mapped[datetime]


class Consent(Base):
    """A recipient's consent to locker delivery: standing, or for one parcel."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carriers.id"))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))
    recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


# --- lockers ----------------------------------------------------------------------------------


class Locker(Base):
    """One smart locker, with what it last reported and what we want it to have."""

    __tablename__ = "lockers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    key_generation: Mapped[int] = mapped_column(Integer, default=1)
    """Generation of the broker password and command key (bumped by a rotation)."""
    code_key_generation: Mapped[int] = mapped_column(Integer, default=1)
    """Generation of the code key, apart: rotating credentials keeps cached pickup codes valid."""
    firmware: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(64))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    presence_boot_id: Mapped[int] = mapped_column(BigInteger, default=0)
    presence_connection: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_at: Mapped[datetime | None]
    offline_since: Mapped[datetime | None]
    last_telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    boot_id: Mapped[int] = mapped_column(BigInteger, default=0)
    birth_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The stream of sequenced messages of the newest boot: a gap exists while
    # stream_count + stream_skipped < max(stream_high, stream_reported_high).
    stream_boot_id: Mapped[int] = mapped_column(BigInteger, default=0)
    stream_high: Mapped[int] = mapped_column(BigInteger, default=0)
    stream_count: Mapped[int] = mapped_column(BigInteger, default=0)
    stream_skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    stream_reported_high: Mapped[int] = mapped_column(BigInteger, default=0)
    gap_since: Mapped[datetime | None]
    rebirth_requested_at: Mapped[datetime | None]
    command_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    code_cache_version: Mapped[int] = mapped_column(BigInteger, default=0)
    code_cache_reported: Mapped[int | None] = mapped_column(BigInteger)
    config_version: Mapped[int] = mapped_column(BigInteger, default=0)
    """The desired configuration's version (0: none set, the locker keeps its own)."""
    config_reported: Mapped[int | None] = mapped_column(BigInteger)
    """The configuration version the locker last said it has in force."""
    created_at: Mapped[datetime]
    decommissioned_at: Mapped[datetime | None]


class Compartment(Base):
    """One compartment: its class, and its physical state as last reported, in seq order."""

    __tablename__ = "compartments"
    __table_args__ = (UniqueConstraint("locker_id", "label"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), index=True)
    label: Mapped[str] = mapped_column(String(8))
    size: Mapped[str] = mapped_column(String(2))
    temperature: Mapped[str] = mapped_column(String(8))
    door: Mapped[str] = mapped_column(String(8), default="closed")
    lock: Mapped[str] = mapped_column(String(10), default="locked")
    occupied: Mapped[bool] = mapped_column(Boolean, default=False)
    locker_in_service: Mapped[bool] = mapped_column(Boolean, default=True)
    out_of_service_reason: Mapped[str | None] = mapped_column(String(200))
    state_boot_id: Mapped[int] = mapped_column(BigInteger, default=0)
    state_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class LockerConfig(Base):
    """One version of a locker's desired configuration (the shadow's history; never changed).

    ``settings`` holds every field of the protocol's ``set_config`` but the version.
    """

    __tablename__ = "locker_configs"
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by_user_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(200))


class CarrierQuota(Base):
    """At most ``max_compartments`` of a locker may hold one carrier's parcels at once."""

    __tablename__ = "carrier_quotas"
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), primary_key=True)
    carrier_id: Mapped[int] = mapped_column(ForeignKey("carriers.id"), primary_key=True)
    max_compartments: Mapped[int] = mapped_column(Integer)


# --- parcels ----------------------------------------------------------------------------------


class Parcel(Base):
    """A parcel in (inbound) or out (outbound) through a locker, and where it is in its life."""

    __tablename__ = "parcels"
    __table_args__ = (
        UniqueConstraint("carrier_id", "tracking_number", "direction"),
        Index(
            "uq_parcels_compartment_holding",
            "compartment_id",
            unique=True,
            sqlite_where=text(_holding),
            postgresql_where=text(_holding),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(16), unique=True)
    carrier_id: Mapped[int] = mapped_column(ForeignKey("carriers.id"))
    tracking_number: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), index=True)
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("recipients.id"), index=True)
    village_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), index=True)
    compartment_id: Mapped[int | None] = mapped_column(ForeignKey("compartments.id"))
    size: Mapped[str] = mapped_column(String(2))
    temperature: Mapped[str] = mapped_column(String(8))
    courier_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    open_purpose: Mapped[str | None] = mapped_column(String(24))
    """Why its door was last opened remotely (deposit, return_to_carrier, ...), until closed."""
    created_at: Mapped[datetime]
    state_changed_at: Mapped[datetime]
    deposited_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]
    picked_up_at: Mapped[datetime | None]
    picked_up_via: Mapped[str | None] = mapped_column(String(16))
    picked_up_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    offline_credit_s: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)


class PickupCode(Base):
    """A pickup (or drop-off) code, as the keyed hash the locker also holds."""

    __tablename__ = "pickup_codes"
    __table_args__ = (
        Index(
            "uq_pickup_codes_active",
            "locker_id",
            "code_hash",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    parcel_id: Mapped[int] = mapped_column(ForeignKey("parcels.id"), index=True)
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"))
    code_hash: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


# --- commands, device messages, audit, outbox -------------------------------------------------


class Command(Base):
    """A command to a locker: stored first, then signed, sent, retried until answered."""

    __tablename__ = "commands"
    __table_args__ = (
        UniqueConstraint("locker_id", "counter"),
        Index("ix_commands_due", "state", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), index=True)
    counter: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(24))
    args: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(12))
    purpose: Mapped[str | None] = mapped_column(String(24))
    parcel_id: Mapped[int | None] = mapped_column(ForeignKey("parcels.id"), index=True)
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_sent_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    result_status: Mapped[str | None] = mapped_column(String(12))
    result_outcome: Mapped[str | None] = mapped_column(String(16))
    result_reason: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    completed_at: Mapped[datetime | None]


class DeviceMessage(Base):
    """A sequenced message from a locker (birth, event, result), stored once."""

    __tablename__ = "device_messages"
    __table_args__ = (UniqueConstraint("locker_id", "boot_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    locker_id: Mapped[str] = mapped_column(String(64))
    boot_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime]
    received_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]


class AuditEntry(Base):
    """Append-only record of every door opening, every remote-open request and refusal."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    locker_id: Mapped[str] = mapped_column(String(64), index=True)
    compartment: Mapped[str | None] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str | None] = mapped_column(String(24))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    parcel_id: Mapped[int | None] = mapped_column(Integer)
    command_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]]


class Notification(Base):
    """An SMS (or other message) waiting to be sent: the transactional outbox.

    The body of a pickup notification holds the code in clear only until it is sent; then it is
    replaced by a redacted copy.
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    to: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    parcel_id: Mapped[int | None] = mapped_column(ForeignKey("parcels.id"), index=True)
    state: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    lease_until: Mapped[datetime | None]


class CodeAttempt(Base):
    """Wrong-code counter and lockout for one keypad or one API client."""

    __tablename__ = "code_attempts"
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The stored response of a state-changing API call made with an Idempotency-Key."""

    __tablename__ = "idempotency_records"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


# --- health and security ----------------------------------------------------------------------

_open_alarm = "state <> 'cleared'"


class Alarm(Base):
    """Something wrong with a locker (or the fleet), from raised to cleared, kept as history.

    At most one alarm per ``(locker_id, compartment, type)`` is open (not cleared): a partial
    unique index, so replicas raising the same alarm at once cannot open two. ``locker_id`` is
    ``""`` for an alarm about the whole fleet and ``compartment`` is ``""`` for one about a
    whole locker (never NULL, which a unique index would treat as always distinct).
    """

    __tablename__ = "alarms"
    __table_args__ = (
        Index(
            "uq_alarms_open",
            "locker_id",
            "compartment",
            "type",
            unique=True,
            sqlite_where=text(_open_alarm),
            postgresql_where=text(_open_alarm),
        ),
        Index("ix_alarms_state_severity", "state", "severity"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    locker_id: Mapped[str] = mapped_column(String(64), index=True)
    compartment: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(24))
    severity: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, default=1)
    parcel_id: Mapped[int | None] = mapped_column(Integer)
    """The parcel in the compartment when it was raised (a temperature excursion's evidence)."""
    detail: Mapped[dict[str, Any]]
    first_seen_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by_user_id: Mapped[int | None] = mapped_column(Integer)
    cleared_at: Mapped[datetime | None]
    cleared_by_user_id: Mapped[int | None] = mapped_column(Integer)
    """None when the locker itself reported the end of the condition."""
    clear_reason: Mapped[str | None] = mapped_column(String(200))


class FleetControl(Base):
    """A fleet-wide switch set by an admin (``lockdown``), shared by every replica."""

    __tablename__ = "fleet_controls"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(300))
    changed_at: Mapped[datetime]
    changed_by_user_id: Mapped[int | None] = mapped_column(Integer)


class OpenCounter(Base):
    """Remote door openings granted in one minute to one scope (``user:7``, ``carrier:2``,
    ``fleet``), counted by an atomic conditional UPDATE so the limit holds across replicas."""

    __tablename__ = "open_counters"
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ProvisioningToken(Base):
    """A one-time token a locker (or the technician's bench tool) trades for its credentials.

    Stored only as its keyed hash; single use (``used_at``), short expiry.
    """

    __tablename__ = "provisioning_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    locker_id: Mapped[str] = mapped_column(ForeignKey("lockers.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by_user_id: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

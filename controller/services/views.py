"""Plain read models the services return (the API turns them into JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.db.models import Command, Compartment, Locker, Parcel


@dataclass(frozen=True)
class CommandView:
    id: str
    locker_id: str
    action: str
    state: str
    purpose: str | None
    parcel_id: int | None
    counter: int
    attempts: int
    created_at: datetime
    expires_at: datetime
    last_sent_at: datetime | None
    completed_at: datetime | None
    result_status: str | None
    result_outcome: str | None
    result_reason: str | None

    @classmethod
    def of(cls, row: Command) -> CommandView:
        return cls(
            row.id, row.locker_id, row.action, row.state, row.purpose, row.parcel_id,
            row.counter, row.attempts, row.created_at, row.expires_at, row.last_sent_at,
            row.completed_at, row.result_status, row.result_outcome, row.result_reason,
        )  # fmt: skip


@dataclass(frozen=True)
class ParcelView:
    id: int
    ref: str
    carrier_id: int
    tracking_number: str
    direction: str
    state: str
    locker_id: str
    compartment: str | None
    size: str
    temperature: str
    recipient_phone: str | None
    village_site_id: int | None
    created_at: datetime
    deposited_at: datetime | None
    deadline_at: datetime | None
    picked_up_at: datetime | None
    picked_up_via: str | None
    open_purpose: str | None
    last_command: CommandView | None = None

    @classmethod
    def of(
        cls,
        parcel: Parcel,
        *,
        compartment: str | None,
        phone: str | None,
        command: Command | None = None,
    ) -> ParcelView:
        return cls(
            parcel.id, parcel.ref, parcel.carrier_id, parcel.tracking_number, parcel.direction,
            parcel.state, parcel.locker_id, compartment, parcel.size, parcel.temperature,
            _mask_phone(phone), parcel.village_site_id, parcel.created_at, parcel.deposited_at,
            parcel.deadline_at, parcel.picked_up_at, parcel.picked_up_via, parcel.open_purpose,
            CommandView.of(command) if command else None,
        )  # fmt: skip


def _mask_phone(phone: str | None) -> str | None:
    """Couriers and agents see 138****5678, never a villager's whole number."""
    if phone is None or len(phone) < 7:
        return phone
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


@dataclass(frozen=True)
class CompartmentView:
    label: str
    size: str
    temperature: str
    door: str
    lock: str
    occupied: bool
    in_service: bool
    out_of_service_reason: str | None
    parcel_ref: str | None
    parcel_state: str | None

    @classmethod
    def of(cls, c: Compartment, parcel: Parcel | None) -> CompartmentView:
        return cls(
            c.label, c.size, c.temperature, c.door, c.lock, c.occupied,
            c.locker_in_service and c.out_of_service_reason is None, c.out_of_service_reason,
            parcel.ref if parcel else None, parcel.state if parcel else None,
        )  # fmt: skip


@dataclass(frozen=True)
class LockerView:
    id: str
    site_id: int
    name: str
    address: str | None
    status: str
    online: bool
    last_seen_at: datetime | None
    offline_since: datetime | None
    firmware: str | None
    free: dict[str, int] = field(default_factory=dict)
    """Free compartments by ``size/temperature`` (e.g. ``"M/ambient": 3``)."""
    compartments: list[CompartmentView] | None = None
    telemetry: dict[str, Any] | None = None
    code_cache: dict[str, int | None] | None = None

    @classmethod
    def of(cls, locker: Locker, **extra: Any) -> LockerView:
        return cls(
            locker.id, locker.site_id, locker.name, locker.address, locker.status, locker.online,
            locker.last_seen_at, locker.offline_since, locker.firmware, **extra,
        )  # fmt: skip


@dataclass(frozen=True)
class DepositStarted:
    parcel: ParcelView
    command_id: str | None
    created: bool
    """False when the request repeated one already made (same carrier and tracking number)."""


@dataclass(frozen=True)
class Credentials:
    """What a locker needs to join the fleet (shown once, at registration)."""

    locker_id: str
    mqtt_username: str
    mqtt_password: str
    command_key_hex: str
    code_key_hex: str
    topic_root: str


@dataclass(frozen=True)
class OccupancyRow:
    site_id: int
    site_name: str
    locker_id: str
    locker_name: str
    compartments: int
    holding: int
    waiting_for_pickup: int
    expired: int
    out_of_service: int
    online: bool

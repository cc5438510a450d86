"""What a locker tells us about itself: presence, births, telemetry, compartment states.

Physical state is applied in the locker's own order, never in arrival order: a compartment
remembers the ``(boot_id, seq)`` of the message that last set it and ignores anything older
(two replicas can process one locker's messages out of order). Presence is ordered by
``(boot_id, connection)``, so a last will from an old connection cannot mark a locker offline
after it came back.

A locker that comes back online gets its parcels' deadlines extended by the outage, its open
commands resent at once, and — on its birth — whatever code-cache pages and configuration it
is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import from_ms
from controller.db.models import Compartment, Locker, Parcel
from controller.domain.deadlines import outage_credit
from controller.domain.states import ParcelState
from controller.services import codes, commands, config_shadow
from controller.services.context import Context
from protocol.fields import to_wire
from protocol.messages import (
    Birth,
    CompartmentState,
    DoorState,
    LockState,
    Presence,
    PresenceState,
    Telemetry,
)

log = logging.getLogger("lockerfleet.lockers")


def newer(boot_id: int, seq: int, compartment: Compartment) -> bool:
    """Return whether a message at ``(boot_id, seq)`` is newer than the compartment's state."""
    return (boot_id, seq) > (compartment.state_boot_id, compartment.state_seq)


def set_physical(
    compartment: Compartment,
    boot_id: int,
    seq: int,
    at: datetime,
    *,
    door: DoorState | None = None,
    lock: LockState | None = None,
    occupied: bool | None = None,
    in_service: bool | None = None,
) -> bool:
    """Apply reported physical state if the message is newer; return whether it was."""
    if not newer(boot_id, seq, compartment):
        return False
    if door is not None:
        compartment.door = door.value
    if lock is not None:
        compartment.lock = lock.value
    if occupied is not None:
        compartment.occupied = occupied
    if in_service is not None:
        compartment.locker_in_service = in_service
    compartment.state_boot_id, compartment.state_seq = boot_id, seq
    compartment.updated_at = at
    return True


@dataclass
class CatchUp:
    """What lockers coming online in one batch still need, done together at the batch's end
    (:func:`catch_up`) in a few set-based statements instead of several round trips each: a
    reconnect storm brings thousands of births at once."""

    outages: list[tuple[Locker, datetime, datetime]] = field(default_factory=list)
    resend: set[str] = field(default_factory=set)
    syncs: dict[str, codes.SyncWanted] = field(default_factory=dict)


async def catch_up(session: AsyncSession, ctx: Context, later: CatchUp) -> None:
    """Credit the outages, queue the code syncs, and make the lockers' open commands due."""
    await _credit_outages(session, ctx, later.outages)
    await codes.full_syncs(session, ctx, list(later.syncs.values()))
    if later.resend:
        await commands.resend_now(session, sorted(later.resend), ctx.clock.now())


async def apply_presence(
    session: AsyncSession,
    ctx: Context,
    locker: Locker,
    presence: Presence,
    at: datetime,
    later: CatchUp | None = None,
) -> None:
    """Mark the locker online or offline, if this presence is not older than the last."""
    if (presence.boot_id, presence.connection) < (
        locker.presence_boot_id,
        locker.presence_connection,
    ):
        return
    locker.presence_boot_id, locker.presence_connection = presence.boot_id, presence.connection
    locker.last_seen_at = at
    if presence.state is PresenceState.ONLINE:
        await came_online(session, ctx, locker, at, later)
    elif locker.online:
        locker.online = False
        locker.offline_since = at
        log.info("locker %s went offline", locker.id)
    _note_reported_high(locker, presence.boot_id, presence.seq)


async def came_online(
    session: AsyncSession, ctx: Context, locker: Locker, at: datetime, later: CatchUp | None = None
) -> None:
    """Everything that follows a locker coming back: deadline credit, commands resent (now,
    or at the end of the batch when ``later`` collects the work)."""
    if locker.online:
        return
    locker.online = True
    outages = []
    if locker.offline_since is not None:
        outages.append((locker, locker.offline_since, at))
        log.info("locker %s back online after %s", locker.id, at - locker.offline_since)
    locker.offline_since = None
    if later is not None:
        later.outages += outages
        later.resend.add(locker.id)
        return
    await _credit_outages(session, ctx, outages)
    await commands.resend_now(session, [locker.id], at)


async def _credit_outages(
    session: AsyncSession, ctx: Context, outages: list[tuple[Locker, datetime, datetime]]
) -> None:
    """Move the deadlines of the lockers' waiting parcels by each outage's overlap with them."""
    if not outages:
        return
    rows = (
        await session.execute(
            select(Parcel, Compartment.label)
            .join(Compartment, Compartment.id == Parcel.compartment_id)
            .where(
                Parcel.locker_id.in_(sorted({locker.id for locker, _, _ in outages})),
                Parcel.state == ParcelState.NOTIFIED.value,
            )
            .order_by(Parcel.id)
        )
    ).all()
    waiting: dict[str, list[tuple[Parcel, str]]] = {}
    for parcel, label in rows:
        waiting.setdefault(parcel.locker_id, []).append((parcel, label))
    for locker, start, end in outages:
        extended: list[tuple[Parcel, str]] = []
        for parcel, label in waiting.get(locker.id, []):
            if parcel.deposited_at is None or parcel.deadline_at is None:
                continue
            credit = outage_credit(parcel.deposited_at, parcel.deadline_at, start, end)
            if credit > timedelta(0):
                parcel.deadline_at += credit
                parcel.offline_credit_s += int(credit.total_seconds())
                extended.append((parcel, label))
        if extended:
            await codes.extend(session, ctx, locker_id=locker.id, parcels=extended)


def apply_telemetry(locker: Locker, telemetry: Telemetry, at: datetime) -> None:
    locker.last_seen_at = at
    locker.last_telemetry = {**to_wire(telemetry), "received_at": at.isoformat()}
    _note_reported_high(locker, telemetry.boot_id, telemetry.seq)


def _note_reported_high(locker: Locker, boot_id: int, seq: int) -> None:
    if boot_id == locker.stream_boot_id:
        locker.stream_reported_high = max(locker.stream_reported_high, seq)


async def apply_birth(
    session: AsyncSession,
    ctx: Context,
    locker: Locker,
    birth: Birth,
    compartments: dict[str, Compartment],
    at: datetime,
    later: CatchUp | None = None,
) -> None:
    """Take in a birth: identity, reported versions, every compartment, then catch up (now,
    or at the end of the batch when ``later`` collects the work)."""
    if (birth.boot_id, birth.seq) < (locker.boot_id, locker.birth_seq):
        return  # an older birth, delivered late
    locker.firmware, locker.model = birth.firmware, birth.model
    locker.boot_id, locker.birth_seq = birth.boot_id, birth.seq
    locker.code_cache_reported = birth.code_cache_version
    locker.config_reported = birth.config_version
    locker.last_seen_at = at
    if locker.status == "registered":
        locker.status = "active"
    if (birth.boot_id, birth.connection) >= (locker.presence_boot_id, locker.presence_connection):
        locker.presence_boot_id, locker.presence_connection = birth.boot_id, birth.connection
        await came_online(session, ctx, locker, at, later)
    _reconcile_compartments(session, locker, birth, compartments, at)
    if locker.rebirth_requested_at is not None:
        # The rebirth replaced whatever state the lost messages carried: stop waiting for them.
        locker.stream_skipped = max(
            locker.stream_skipped,
            max(locker.stream_high, locker.stream_reported_high) - locker.stream_count,
        )
        locker.rebirth_requested_at = None
        locker.gap_since = None
    wanted = codes.SyncWanted(locker, birth.code_cache_version, birth.code_staging)
    if later is not None:
        later.syncs[locker.id] = wanted
    else:
        await codes.full_syncs(session, ctx, [wanted])
    await config_shadow.catch_up(session, ctx, locker)


def _reconcile_compartments(
    session: AsyncSession,
    locker: Locker,
    birth: Birth,
    compartments: dict[str, Compartment],
    at: datetime,
) -> None:
    """Apply the reported state of every compartment. A locker registered without a layout
    gets the one it reports; one with a layout keeps it, and differences are logged."""
    has_layout = bool(compartments)
    reported = {c.id: c for c in birth.compartments}
    for label, state in reported.items():
        row = compartments.get(label)
        if row is None:
            if has_layout:
                log.warning("locker %s reports unknown compartment %s", locker.id, label)
                continue
            row = _new_compartment(locker.id, state, at)
            session.add(row)
            compartments[label] = row
        set_physical(
            row,
            birth.boot_id,
            birth.seq,
            at,
            door=state.door,
            lock=state.lock,
            occupied=state.occupied,
            in_service=state.in_service,
        )
    missing = set(compartments) - set(reported)
    if missing:
        log.warning("locker %s did not report compartments %s", locker.id, sorted(missing))


def _new_compartment(locker_id: str, state: CompartmentState, at: datetime) -> Compartment:
    return Compartment(
        locker_id=locker_id,
        label=state.id,
        size=state.size.value,
        temperature=state.temperature.value,
        door=state.door.value,
        lock=state.lock.value,
        occupied=state.occupied,
        locker_in_service=state.in_service,
        state_boot_id=0,
        state_seq=0,
        updated_at=at,
    )


def locker_time(ms: int) -> datetime:
    """The locker's own timestamp as a datetime (its clock may be skewed)."""
    return from_ms(ms)

"""What a locker's events and command results do to compartments, parcels and commands.

Called by the ingest once per *newly stored* message, in ``(boot_id, seq)`` order per locker,
inside the batch's transaction. Each handler is tolerant of late and repeated news: physical
state is seq-guarded (:mod:`~controller.services.locker_state`), parcel steps go through the
lifecycle table in non-strict mode, and a command is settled once.

A door that closes is matched to the parcel that holds its compartment and to the reason the
door was opened remotely (the parcel's ``open_purpose``): a deposit closes with the parcel
inside, a return or collection closes empty, and so on. Keypad pickups are identified by the
``pickup`` event, which names the parcel and the code that opened the door, whether the locker
was online or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Command as CommandRow
from controller.db.models import Compartment, Locker, Parcel, PickupCode
from controller.domain.alarms import AlarmType
from controller.domain.states import HOLDING_STATES, ParcelEvent, ParcelState
from controller.services import alarms, audit, codes, commands, config_shadow, parcel_flow
from controller.services.context import Context
from controller.services.locker_state import CatchUp, locker_time, set_physical
from protocol.fields import from_wire
from protocol.messages import (
    Action,
    CommandResult,
    ConfigApplied,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorLeftOpen,
    DoorOpened,
    DoorState,
    Event,
    EventsDropped,
    LockState,
    OccupancyChanged,
    OpenPurpose,
    Outcome,
    Pickup,
    RefusalReason,
    ResultStatus,
    SyncCodes,
    TemperatureExcursion,
)

log = logging.getLogger("lockerfleet.effects")

CLOSE_EMPTY_AFTER: dict[str, ParcelEvent] = {
    OpenPurpose.RETURN_TO_CARRIER: ParcelEvent.TAKEN_BY_CARRIER,
    OpenPurpose.COLLECTION: ParcelEvent.TAKEN_BY_CARRIER,
    OpenPurpose.AGENT_PICKUP: ParcelEvent.PICKED_UP,
}
"""A remote opening for these purposes is done once the door closes with nothing inside."""


PARCEL_ALARM_EVENTS = (DoorForced, DoorLeftOpen, DoorJammed, TemperatureExcursion)
"""Events whose alarm names the parcel in the compartment."""

HOLDER_EVENTS = (DoorOpened, DoorClosed, *PARCEL_ALARM_EVENTS)
"""Events whose effects need the parcel holding their compartment (loaded with the batch)."""


@dataclass
class BatchState:
    """What the effects of one batch share: loaded rows and follow-up work."""

    lockers: dict[str, Locker]
    compartments: dict[str, dict[str, Compartment]] = field(default_factory=dict)
    """Compartment rows by locker id, then label."""
    commands: dict[str, CommandRow] = field(default_factory=dict)
    holding: dict[int, Parcel | None] = field(default_factory=dict)
    """The parcel holding each compartment the batch's door events name (None: empty), locked
    when the batch loaded it. No parcel can take a compartment while the batch holds its
    locker's row (every allocation locks it first), so the only change is a parcel that stops
    holding one, which :meth:`Effects._holding` sees in its state."""
    rebirth: set[str] = field(default_factory=set)
    catch_up: CatchUp = field(default_factory=CatchUp)
    """Work for lockers that came online in the batch, done at its end."""

    def compartments_of(self, locker_id: str) -> dict[str, Compartment]:
        """The locker's compartments by label (the dict itself: additions are kept)."""
        return self.compartments.setdefault(locker_id, {})


class Effects:
    def __init__(self, session: AsyncSession, ctx: Context, state: BatchState) -> None:
        self.session = session
        self.ctx = ctx
        self.state = state
        self.alarms = alarms.AlarmBook(session)

    async def apply_event(self, event: Event, at: datetime) -> None:
        locker = self.state.lockers[event.locker_id]
        data = event.data
        if isinstance(data, DoorOpened):
            await self._door_opened(locker, event, data, at)
        elif isinstance(data, DoorClosed):
            await self._door_closed(locker, event, data, at)
        elif isinstance(data, DoorJammed):
            self._door_jammed(locker, event, data, at)
        elif isinstance(data, OccupancyChanged):
            compartment = self._compartment(locker.id, data.compartment)
            if compartment is not None:
                set_physical(compartment, event.boot_id, event.seq, at, occupied=data.occupied)
        elif isinstance(data, Pickup):
            await self._pickup(locker, event, data, at)
        elif isinstance(data, EventsDropped):
            log.warning(
                "locker %s lost %d events %d..%d",
                locker.id,
                data.count,
                data.first_seq,
                data.last_seq,
            )
            if event.boot_id == locker.stream_boot_id:
                locker.stream_skipped += data.count
            self.state.rebirth.add(locker.id)
        elif isinstance(data, ConfigApplied):
            config_shadow.note_applied(locker, event.boot_id, data.config_version)
        elif isinstance(data, DoorForced):
            audit.record(
                self.session, at=locker_time(event.ts), locker_id=locker.id,
                compartment=data.compartment, action="door_forced", cause="forced",
                actor_kind="unknown", received_at=at.isoformat(),
            )  # fmt: skip
        await self._alarms(locker, event, at)

    async def _alarms(self, locker: Locker, event: Event, at: datetime) -> None:
        """Raise or clear the alarms the event means (:mod:`~controller.services.alarms`)."""
        data = event.data
        parcel_id = None
        if isinstance(data, PARCEL_ALARM_EVENTS):
            compartment = self.state.compartments_of(locker.id).get(data.compartment)
            if compartment is not None:
                parcel = await self._holding(compartment)
                parcel_id = parcel.id if parcel is not None else None
        command_id = data.command_id if isinstance(data, DoorOpened) else None
        await alarms.on_event(
            self.alarms, locker.id, data, at=at, locker_ts=locker_time(event.ts),
            parcel_id=parcel_id, command_known=command_id in self.state.commands,
            low_battery_pct=self.ctx.settings.low_battery_pct,
        )  # fmt: skip

    async def _holding(self, compartment: Compartment) -> Parcel | None:
        """The parcel that holds ``compartment`` now (loaded with the batch when it could be)."""
        if compartment.id not in self.state.holding:
            return await parcel_flow.holding_parcel(self.session, compartment.id)
        parcel = self.state.holding[compartment.id]
        if parcel is None or ParcelState(parcel.state) not in HOLDING_STATES:
            return None
        return parcel

    def _compartment(self, locker_id: str, label: str) -> Compartment | None:
        compartment = self.state.compartments_of(locker_id).get(label)
        if compartment is None:
            log.warning("locker %s reports unknown compartment %s", locker_id, label)
        return compartment

    async def _door_opened(
        self, locker: Locker, event: Event, data: DoorOpened, at: datetime
    ) -> None:
        compartment = self._compartment(locker.id, data.compartment)
        command = self.state.commands.get(data.command_id or "")
        parcel_id: int | None = command.parcel_id if command else None
        if data.cause is DoorCause.KEYPAD and data.code_hash:
            parcel_id = await self._parcel_of_code(locker.id, data.code_hash)
        audit.record(
            self.session,
            at=locker_time(event.ts),
            locker_id=locker.id,
            compartment=data.compartment,
            action="door_opened",
            cause=data.cause.value,
            actor_kind=_actor_kind(data.cause, command),
            parcel_id=parcel_id,
            command_id=data.command_id,
            received_at=at.isoformat(),
            requested_by=command.requested_by_user_id if command else None,
            purpose=command.purpose if command else None,
        )
        if compartment is None:
            return
        set_physical(
            compartment, event.boot_id, event.seq, at, door=DoorState.OPEN, lock=LockState.RELEASED
        )
        parcel = await self._holding(compartment)
        if parcel is not None and parcel.open_purpose == OpenPurpose.DEPOSIT:
            await parcel_flow.advance(
                self.session,
                self.ctx,
                parcel,
                ParcelEvent.DOOR_OPENED,
                at=at,
                locker=locker,
                strict=False,
            )

    async def _door_closed(
        self, locker: Locker, event: Event, data: DoorClosed, at: datetime
    ) -> None:
        compartment = self._compartment(locker.id, data.compartment)
        if compartment is None:
            return
        set_physical(
            compartment,
            event.boot_id,
            event.seq,
            at,
            door=DoorState.CLOSED,
            lock=LockState.LOCKED,
            occupied=data.occupied,
        )
        parcel = await self._holding(compartment)
        if parcel is None:
            return
        step = _closing_step(parcel, data.occupied)
        purpose = parcel.open_purpose
        parcel.open_purpose = None
        if step is None:
            return
        if step is ParcelEvent.PICKED_UP and purpose == OpenPurpose.AGENT_PICKUP:
            parcel.picked_up_at, parcel.picked_up_via = at, "agent"
        await parcel_flow.advance(
            self.session, self.ctx, parcel, step, at=at, locker=locker, strict=False
        )

    def _door_jammed(self, locker: Locker, event: Event, data: DoorJammed, at: datetime) -> None:
        compartment = self._compartment(locker.id, data.compartment)
        if compartment is not None:
            compartment.out_of_service_reason = "door jammed"
            set_physical(
                compartment, event.boot_id, event.seq, at, lock=LockState.LOCKED, in_service=False
            )
        audit.record(
            self.session,
            at=locker_time(event.ts),
            locker_id=locker.id,
            compartment=data.compartment,
            action="door_jammed",
            cause="command",
            command_id=data.command_id,
            received_at=at.isoformat(),
        )

    async def _parcel_of_code(self, locker_id: str, code_hash: str) -> int | None:
        return (
            await self.session.scalars(
                select(PickupCode.parcel_id)
                .where(PickupCode.locker_id == locker_id, PickupCode.code_hash == code_hash)
                .order_by(PickupCode.id.desc())
            )
        ).first()

    async def _pickup(self, locker: Locker, event: Event, data: Pickup, at: datetime) -> None:
        parcel = (
            await self.session.scalars(
                select(Parcel).where(Parcel.ref == data.parcel_ref).with_for_update()
            )
        ).first()
        known = parcel is not None and await self._code_belongs(parcel, data.code_hash)
        if parcel is None or parcel.locker_id != locker.id or not known:
            log.warning(
                "locker %s reports a pickup of unknown parcel %s", locker.id, data.parcel_ref
            )
            return
        if parcel.state == ParcelState.BOOKED:  # a drop-off code: the door closing decides
            parcel.open_purpose = OpenPurpose.DROPOFF.value
            await codes.retire(
                self.session, self.ctx, parcel_id=parcel.id, locker_id=locker.id, at=at
            )
            return
        parcel.picked_up_at = locker_time(event.ts)
        parcel.picked_up_via = "keypad_offline" if data.offline else "keypad"
        await parcel_flow.advance(
            self.session,
            self.ctx,
            parcel,
            ParcelEvent.PICKED_UP,
            at=at,
            locker=locker,
            strict=False,
        )

    async def _code_belongs(self, parcel: Parcel, code_hash: str) -> bool:
        found = await self.session.scalar(
            select(PickupCode.id).where(
                PickupCode.parcel_id == parcel.id, PickupCode.code_hash == code_hash
            )
        )
        return found is not None

    async def apply_result(self, result: CommandResult, wire: dict[str, Any], at: datetime) -> None:
        locker = self.state.lockers[result.locker_id]
        row = self.state.commands.get(result.command_id or "")
        if row is None or row.locker_id != locker.id:
            log.warning("locker %s answers unknown command %s", locker.id, result.command_id)
            return
        if not commands.apply_result(row, result, wire, at):
            return
        if row.action == Action.OPEN_COMPARTMENT:
            await self._open_settled(locker, row, result, at)
        elif row.action == Action.SYNC_CODES:
            await self._sync_settled(locker, row, result)
        elif row.action == Action.SET_CONFIG and result.status is ResultStatus.OK:
            locker.config_reported = result.config_version

    async def _open_settled(
        self, locker: Locker, row: CommandRow, result: CommandResult, at: datetime
    ) -> None:
        if result.status is ResultStatus.OK:
            return  # the door events tell the rest
        compartment_label = str(row.args.get("compartment", ""))
        if result.outcome is Outcome.DOOR_JAMMED:
            compartment = self._compartment(locker.id, compartment_label)
            if compartment is not None:
                compartment.out_of_service_reason = "door jammed"
            if await self.alarms.find(locker.id, AlarmType.DOOR_JAMMED, compartment_label) is None:
                await self.alarms.raise_(
                    locker.id, AlarmType.DOOR_JAMMED, at=at, compartment=compartment_label,
                    detail={"command_id": row.id}, parcel_id=row.parcel_id,
                )  # fmt: skip
        else:
            audit.record(
                self.session,
                at=at,
                locker_id=locker.id,
                compartment=compartment_label,
                action="open_refused_by_locker",
                cause=result.reason,
                actor_kind="locker",
                parcel_id=row.parcel_id,
                command_id=row.id,
            )
        if row.parcel_id is not None:
            parcel = await self.session.get(Parcel, row.parcel_id, with_for_update=True)
            if parcel is not None and parcel.open_purpose == row.purpose:
                parcel.open_purpose = None

    async def _sync_settled(self, locker: Locker, row: CommandRow, result: CommandResult) -> None:
        if result.cache_version is not None:
            locker.code_cache_reported = result.cache_version
        if result.reason is RefusalReason.CACHE_VERSION_MISMATCH and not await self._full_pending(
            locker
        ):
            await codes.full_sync(
                self.session, self.ctx, locker, reported_version=result.cache_version, staging=None
            )

    async def _full_pending(self, locker: Locker) -> bool:
        """Return whether a full sync to the current target is already on its way."""
        rows = await self.session.scalars(
            select(CommandRow).where(
                CommandRow.locker_id == locker.id,
                CommandRow.action == Action.SYNC_CODES.value,
                CommandRow.state.in_(["pending", "sent"]),
            )
        )
        for row in rows:
            args = from_wire(SyncCodes, row.args)
            if args.mode.value == "full" and args.to_version == locker.code_cache_version:
                return True
        return False


def _closing_step(parcel: Parcel, occupied: bool) -> ParcelEvent | None:
    """Return the lifecycle step a door closing means for the parcel holding it, if any."""
    state = ParcelState(parcel.state)
    if state in (ParcelState.RESERVED, ParcelState.DOOR_OPENED, ParcelState.BOOKED):
        if occupied:
            return ParcelEvent.CLOSED_WITH_PARCEL
        return ParcelEvent.CLOSED_EMPTY if state is ParcelState.DOOR_OPENED else None
    if not occupied and parcel.open_purpose in CLOSE_EMPTY_AFTER:
        return CLOSE_EMPTY_AFTER[parcel.open_purpose]
    return None


def _actor_kind(cause: DoorCause, command: CommandRow | None) -> str:
    if cause is DoorCause.KEYPAD:
        return "recipient"
    if cause is DoorCause.SERVICE:
        return "technician"
    return "user" if command and command.requested_by_user_id else "system"

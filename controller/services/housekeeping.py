"""Periodic work any replica may do at any time: it is idempotent and guarded by row locks.

* Parcels whose storage window is over become ``expired`` (their codes leave the locker's
  cache) — but not while their locker is offline: its outage is credited when it returns.
* Outbound bookings nobody dropped off within their window are cancelled.
* A deposit abandoned half-way (the compartment reserved, but no parcel went in and no door
  command is still under way, for ``reservation_timeout_s``) is cancelled, so a courier who
  walked away — or a controller that died mid-deposit — does not keep a compartment forever.
* A gap in a locker's message stream that outlived the locker's retransmissions, with no batch
  arriving to notice it, gets its rebirth requested here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from controller.db.models import Command as CommandRow
from controller.db.models import Locker, Parcel
from controller.domain.states import OPEN_COMMAND_STATES, ParcelEvent, ParcelState
from controller.services import audit, commands, parcel_flow
from controller.services.context import Context
from controller.services.ingest import GAP_GRACE, REBIRTH_TTL
from protocol.messages import RequestRebirth

log = logging.getLogger("lockerfleet.housekeeping")


class Housekeeping:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def run_once(self) -> dict[str, int]:
        """Do one round; return what it did, by kind."""
        return {
            "expired": await self.expire_parcels(),
            "bookings_cancelled": await self.cancel_stale_bookings(),
            "reservations_released": await self.release_abandoned_reservations(),
            "rebirths": await self.chase_gaps(),
        }

    async def _due(self, state: ParcelState) -> list[tuple[int, str]]:
        now = self.ctx.clock.now()
        async with self.ctx.db.reader() as session:
            rows = await session.execute(
                select(Parcel.id, Parcel.locker_id)
                .join(Locker, Locker.id == Parcel.locker_id)
                .where(Parcel.state == state.value, Parcel.deadline_at < now, Locker.online)
                .limit(500)
            )
            return [(pid, lid) for pid, lid in rows.all()]

    async def _step(
        self, due: list[tuple[int, str]], state: ParcelState, event: ParcelEvent
    ) -> int:
        done = 0
        for parcel_id, locker_id in due:
            now = self.ctx.clock.now()
            async with self.ctx.db.sessions.begin() as session:
                locker = await parcel_flow.lock_locker(session, locker_id)
                parcel = await session.get(Parcel, parcel_id, with_for_update=True)
                if parcel is None or parcel.state != state.value or not locker.online:
                    continue  # somebody got there first, or the locker just went offline
                if parcel.deadline_at is None or parcel.deadline_at >= now:
                    continue
                await parcel_flow.advance(session, self.ctx, parcel, event, at=now, locker=locker)
                done += 1
        if done:
            self.ctx.wake_dispatcher()
        return done

    async def expire_parcels(self) -> int:
        due = await self._due(ParcelState.NOTIFIED)
        return await self._step(due, ParcelState.NOTIFIED, ParcelEvent.DEADLINE_PASSED)

    async def cancel_stale_bookings(self) -> int:
        due = await self._due(ParcelState.BOOKED)
        return await self._step(due, ParcelState.BOOKED, ParcelEvent.CANCELLED)

    async def release_abandoned_reservations(self) -> int:
        now = self.ctx.clock.now()
        cutoff = now - timedelta(seconds=self.ctx.settings.reservation_timeout_s)
        busy = select(CommandRow.parcel_id).where(
            CommandRow.parcel_id.is_not(None),
            CommandRow.state.in_([s.value for s in OPEN_COMMAND_STATES]),
        )
        async with self.ctx.db.reader() as session:
            rows = await session.execute(
                select(Parcel.id, Parcel.locker_id)
                .where(
                    Parcel.state == ParcelState.RESERVED.value,
                    Parcel.state_changed_at < cutoff,
                    Parcel.id.not_in(busy),
                )
                .limit(500)
            )
            due = [(pid, lid) for pid, lid in rows.all()]
        released = 0
        for parcel_id, locker_id in due:
            async with self.ctx.db.sessions.begin() as session:
                locker = await parcel_flow.lock_locker(session, locker_id)
                parcel = await session.get(Parcel, parcel_id, with_for_update=True)
                if parcel is None or parcel.state != ParcelState.RESERVED.value:
                    continue
                if parcel.state_changed_at >= cutoff:
                    continue
                await parcel_flow.advance(
                    session, self.ctx, parcel, ParcelEvent.CANCELLED, at=now, locker=locker
                )
                audit.record(
                    session,
                    at=now,
                    locker_id=locker_id,
                    action="reservation_released",
                    actor_kind="system",
                    parcel_id=parcel_id,
                    reason="no parcel went in within the reservation timeout",
                )
                released += 1
        return released

    async def chase_gaps(self) -> int:
        now = self.ctx.clock.now()
        requested = 0
        async with self.ctx.db.sessions.begin() as session:
            lockers = await session.scalars(
                select(Locker)
                .where(
                    Locker.gap_since.is_not(None), Locker.gap_since < now - GAP_GRACE, Locker.online
                )
                .with_for_update(skip_locked=True)
            )
            for locker in lockers:
                recent = (
                    locker.rebirth_requested_at and now - locker.rebirth_requested_at < REBIRTH_TTL
                )
                if recent:
                    continue
                locker.rebirth_requested_at = now
                await commands.enqueue(
                    session,
                    self.ctx,
                    locker_id=locker.id,
                    args=RequestRebirth(),
                    ttl=REBIRTH_TTL,
                    purpose="rebirth",
                )
                requested += 1
        if requested:
            self.ctx.wake_dispatcher()
            log.info("requested %d rebirths for lasting gaps", requested)
        return requested

"""What village agents (村民事务代办) do: watch their villages' parcels, collect for villagers,
and book produce going out.

An agent serves a set of villages. They see lockers in those villages and in the townships
above them, and the parcels addressed to villagers of their villages. Collecting on a
villager's behalf needs the villager's authorisation: the pickup code the villager passed on
(checked with a per-client lockout), or a standing authorisation recorded beforehand. Every
such opening is audited with the authorisation used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    Carrier,
    Compartment,
    Consent,
    Locker,
    Parcel,
    Recipient,
    Site,
)
from controller.db.models import Command as CommandRow
from controller.domain.errors import (
    InvalidRequest,
    LockerUnavailable,
    NotAllowed,
    NotFound,
)
from controller.domain.states import HOLDING_STATES, Direction, ParcelState
from controller.services import audit, codes, commands, notifications, parcel_flow
from controller.services.context import Actor, Context, Role
from controller.services.deposits import allocate, new_ref, recipient_by_phone
from controller.services.open_guard import audited_refusals, guard_remote_open
from controller.services.views import OccupancyRow, ParcelView
from protocol.messages import OpenCompartment, OpenPurpose, SizeClass, TemperatureClass

BOOKING_WINDOW = timedelta(hours=48)


def require_agent(actor: Actor) -> frozenset[int]:
    if actor.role is not Role.AGENT:
        raise NotAllowed("only a village agent may do this")
    return actor.village_ids


@dataclass(frozen=True)
class OutboundBooking:
    carrier_code: str
    sender_phone: str
    locker_id: str
    size: SizeClass
    temperature: TemperatureClass
    sender_name: str | None = None
    reference: str | None = None
    """The shipment's reference (e.g. the co-operative's order number); generated if absent."""


class AgentService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def _visible_sites(self, session: AsyncSession, villages: frozenset[int]) -> set[int]:
        parents = await session.scalars(select(Site.parent_id).where(Site.id.in_(villages)))
        return set(villages) | {p for p in parents if p is not None}

    async def occupancy(
        self, actor: Actor, *, site_id: int | None = None, locker_id: str | None = None
    ) -> list[OccupancyRow]:
        """Occupancy of the lockers in the agent's villages and their townships."""
        villages = require_agent(actor)
        async with self.ctx.db.reader() as session:
            sites = await self._visible_sites(session, villages)
            if site_id is not None:
                if site_id not in sites:
                    raise NotAllowed(f"site {site_id} is not one of yours")
                sites = {site_id}
            query = (
                select(Locker, Site.name)
                .join(Site, Site.id == Locker.site_id)
                .where(Locker.site_id.in_(sites), Locker.status != "decommissioned")
            )
            if locker_id is not None:
                query = query.where(Locker.id == locker_id)
            rows = []
            for locker, site_name in (await session.execute(query.order_by(Locker.id))).all():
                rows.append(await _occupancy_row(session, locker, site_name))
            return rows

    async def waiting(
        self, actor: Actor, *, village_id: int | None = None, locker_id: str | None = None
    ) -> list[ParcelView]:
        """Parcels waiting for villagers of the agent's villages (notified or expired)."""
        villages = require_agent(actor)
        if village_id is not None and village_id not in villages:
            raise NotAllowed(f"village {village_id} is not one of yours")
        query = (
            select(Parcel, Compartment.label, Recipient.phone)
            .join(Compartment, Compartment.id == Parcel.compartment_id)
            .join(Recipient, Recipient.id == Parcel.recipient_id)
            .where(
                Parcel.village_site_id.in_([village_id] if village_id else villages),
                Parcel.state.in_([ParcelState.NOTIFIED.value, ParcelState.EXPIRED.value]),
            )
        )
        if locker_id is not None:
            query = query.where(Parcel.locker_id == locker_id)
        async with self.ctx.db.reader() as session:
            rows = (await session.execute(query.order_by(Parcel.deadline_at))).all()
            return [ParcelView.of(p, compartment=label, phone=phone) for p, label, phone in rows]

    async def collect(
        self, actor: Actor, parcel_id: int, *, code: str | None, standing: bool
    ) -> ParcelView:
        """Open a waiting parcel's door for the agent, on the villager's authorisation.

        Raises :class:`NotAllowed` (not their village, no standing authorisation),
        :class:`WrongCode`/:class:`LockedOut` (bad code), :class:`InvalidRequest`.
        """
        villages = require_agent(actor)
        if (code is None) == (not standing):
            raise InvalidRequest("give either the villager's code or standing=true")
        async with self.ctx.db.reader() as session:
            parcel = await session.get(Parcel, parcel_id)
            if parcel is None or parcel.village_site_id not in villages:
                raise NotFound(f"no parcel {parcel_id} for your villages")
            locker = await session.get(Locker, parcel.locker_id)
            assert locker is not None
        if code is not None:
            await codes.check_api_code(
                self.ctx, client_key=f"token:{actor.token_id or actor.user_id}", locker=locker,
                parcel_id=parcel.id, code=code,
            )  # fmt: skip
        async with audited_refusals(self.ctx, actor), self.ctx.db.sessions.begin() as session:
            locker = await parcel_flow.lock_locker(session, parcel.locker_id)
            parcel = await session.get(
                Parcel, parcel_id, with_for_update=True, populate_existing=True
            )
            assert parcel is not None
            if parcel.state != ParcelState.NOTIFIED:
                raise InvalidRequest(f"parcel {parcel.ref} is {parcel.state}, not waiting")
            if standing and not await _agent_authorised(session, parcel):
                raise NotAllowed("the villager has no standing authorisation for agent pickup")
            if not locker.online:
                raise LockerUnavailable(f"locker {locker.id} is offline")
            compartment = await session.get(Compartment, parcel.compartment_id)
            assert compartment is not None
            command = await commands.in_flight_open(
                session, parcel.id, OpenPurpose.AGENT_PICKUP.value
            )
            if command is None:  # not already opening for this parcel (a retried request)
                command = await self._open_for_agent(
                    session, actor, locker, parcel, compartment, "code" if code else "standing"
                )
            phone = await session.scalar(
                select(Recipient.phone).where(Recipient.id == parcel.recipient_id)
            )
            view = ParcelView.of(
                parcel, compartment=compartment.label, phone=phone, command=command
            )
        self.ctx.wake_dispatcher()
        return view

    async def _open_for_agent(
        self, session: AsyncSession, actor: Actor, locker: Locker, parcel: Parcel,
        compartment: Compartment, authorisation: str,
    ) -> CommandRow:  # fmt: skip
        """Queue the audited opening for an agent's pickup (guarded like every remote open)."""
        now = self.ctx.clock.now()
        await guard_remote_open(
            session, self.ctx, actor, locker_id=locker.id, compartment=compartment.label,
            purpose=OpenPurpose.AGENT_PICKUP.value, parcel_id=parcel.id,
        )  # fmt: skip
        parcel.open_purpose = OpenPurpose.AGENT_PICKUP.value
        parcel.picked_up_by_user_id = actor.user_id
        command = await commands.enqueue(
            session, self.ctx, locker_id=locker.id,
            args=OpenCompartment(compartment.label, OpenPurpose.AGENT_PICKUP, parcel.ref),
            ttl=timedelta(seconds=self.ctx.settings.open_command_ttl_s),
            purpose=OpenPurpose.AGENT_PICKUP.value, parcel_id=parcel.id,
            user_id=actor.user_id,
        )  # fmt: skip
        audit.record(
            session, at=now, locker_id=locker.id, action="open_requested", actor=actor,
            compartment=compartment.label, cause="agent_pickup", parcel_id=parcel.id,
            command_id=command.id, authorisation=authorisation,
        )  # fmt: skip
        return command

    async def book_outbound(self, actor: Actor, booking: OutboundBooking) -> ParcelView:
        """Reserve a compartment for produce going out and text the sender a drop-off code."""
        villages = require_agent(actor)
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            locker = await parcel_flow.lock_locker(session, booking.locker_id)
            if locker.site_id not in await self._visible_sites(session, villages):
                raise NotAllowed(f"locker {locker.id} is not in your villages or townships")
            if locker.status != "active":
                raise LockerUnavailable(f"locker {locker.id} is {locker.status}")
            carrier = await session.scalar(
                select(Carrier).where(Carrier.code == booking.carrier_code)
            )
            if carrier is None:
                raise NotFound(f"no carrier {booking.carrier_code!r}")
            sender = await recipient_by_phone(
                session, self.ctx, booking.sender_phone, booking.sender_name, None
            )
            village = sender.village_site_id if sender.village_site_id in villages else None
            parcel = Parcel(
                ref=new_ref(), carrier_id=carrier.id,
                tracking_number=booking.reference or f"OUT-{new_ref()}",
                direction=Direction.OUTBOUND.value, state=ParcelState.BOOKED.value,
                recipient_id=sender.id, village_site_id=village, locker_id=locker.id,
                size=booking.size.value, temperature=booking.temperature.value,
                created_at=now, state_changed_at=now, deadline_at=now + BOOKING_WINDOW,
            )  # fmt: skip
            compartment = await allocate(session, parcel, booking.size, booking.temperature)
            code = await codes.issue(
                session, self.ctx, parcel=parcel, locker=locker,
                compartment_label=compartment.label, purpose="dropoff",
                expires_at=now + BOOKING_WINDOW,
            )  # fmt: skip
            notifications.queue(
                session, self.ctx, to=sender.phone, parcel_id=parcel.id,
                body=notifications.dropoff_text(place=locker.name, compartment=compartment.label,
                                                code=code, deadline=now + BOOKING_WINDOW),
            )  # fmt: skip
            audit.record(
                session,
                at=now,
                locker_id=locker.id,
                action="outbound_booked",
                actor=actor,
                compartment=compartment.label,
                parcel_id=parcel.id,
            )
            view = ParcelView.of(parcel, compartment=compartment.label, phone=sender.phone)
        self.ctx.wake_dispatcher()
        return view

    async def authorise(self, actor: Actor, recipient_phone: str, method: str) -> None:
        """Record a villager's standing authorisation for agent pickup (from the agent's
        villages only)."""
        villages = require_agent(actor)
        async with self.ctx.db.sessions.begin() as session:
            recipient = await session.scalar(
                select(Recipient).where(Recipient.phone == recipient_phone)
            )
            if recipient is None or recipient.village_site_id not in villages:
                raise NotFound("no villager with that phone in your villages")
            session.add(
                Consent(
                    recipient_id=recipient.id, scope="agent_pickup", method=method,
                    recorded_by_user_id=actor.user_id, recorded_at=self.ctx.clock.now(),
                )
            )  # fmt: skip


async def _agent_authorised(session: AsyncSession, parcel: Parcel) -> bool:
    found = await session.scalar(
        select(Consent.id).where(
            Consent.recipient_id == parcel.recipient_id,
            Consent.scope == "agent_pickup",
            Consent.revoked_at.is_(None),
        )
    )
    return found is not None


async def _occupancy_row(session: AsyncSession, locker: Locker, site_name: str) -> OccupancyRow:
    total = await session.scalar(
        select(func.count(Compartment.id)).where(Compartment.locker_id == locker.id)
    )
    out_of_service = await session.scalar(
        select(func.count(Compartment.id)).where(
            Compartment.locker_id == locker.id,
            (Compartment.out_of_service_reason.is_not(None)) | (~Compartment.locker_in_service),
        )
    )
    states = dict(
        (
            await session.execute(
                select(Parcel.state, func.count(Parcel.id))
                .where(
                    Parcel.locker_id == locker.id,
                    Parcel.state.in_([s.value for s in HOLDING_STATES]),
                )
                .group_by(Parcel.state)
            )
        ).all()
    )
    return OccupancyRow(
        site_id=locker.site_id,
        site_name=site_name,
        locker_id=locker.id,
        locker_name=locker.name,
        compartments=total or 0,
        holding=sum(states.values()),
        waiting_for_pickup=states.get(ParcelState.NOTIFIED.value, 0),
        expired=states.get(ParcelState.EXPIRED.value, 0),
        out_of_service=out_of_service or 0,
        online=locker.online,
    )

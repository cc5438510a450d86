"""What couriers do: deposit inbound parcels, confirm or cancel, collect returns and produce.

Starting a deposit reserves a compartment and queues a signed ``open_compartment`` in one
transaction. The allocation picks the smallest free compartment that fits
(:mod:`controller.domain.allocation`) and relies on the database for exclusivity: the parcel is
inserted inside a savepoint, and when the partial unique index says another parcel took the
compartment first (another replica, a concurrent request), the next candidate is tried.

A repeated request for the same carrier and tracking number returns the parcel already
created (the natural idempotency key), so a courier's app can retry blindly.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    CarrierQuota,
    Compartment,
    Consent,
    Locker,
    Parcel,
    Recipient,
)
from controller.db.models import Command as CommandRow
from controller.domain import allocation
from controller.domain.errors import (
    ConsentRequired,
    InvalidRequest,
    LockerUnavailable,
    NoFreeCompartment,
    NotAllowed,
    NotFound,
    QuotaExceeded,
)
from controller.domain.states import (
    HOLDING_STATES,
    Direction,
    ParcelEvent,
    ParcelState,
)
from controller.services import audit, commands, parcel_flow
from controller.services.context import Actor, Context, Role
from controller.services.open_guard import audited_refusals, guard_remote_open
from controller.services.views import DepositStarted, ParcelView
from protocol.messages import OpenCompartment, OpenPurpose, SizeClass, TemperatureClass

CONSENT_METHODS = frozenset({"sms_reply", "app", "phone_call", "in_person", "written"})


@dataclass(frozen=True)
class DepositRequest:
    tracking_number: str
    locker_id: str
    size: SizeClass
    temperature: TemperatureClass
    recipient_phone: str
    recipient_name: str | None = None
    village_site_id: int | None = None
    consent_method: str | None = None
    """Set when the courier has just obtained the recipient's consent (recorded, audited)."""


def new_ref() -> str:
    return "P" + secrets.token_hex(6).upper()


def require_courier(actor: Actor) -> int:
    if actor.role is not Role.COURIER or actor.carrier_id is None:
        raise NotAllowed("only a carrier's courier may do this")
    return actor.carrier_id


async def usable_compartments(
    session: AsyncSession, locker_id: str
) -> list[allocation.CompartmentView]:
    """Return every compartment of a locker with whether it can take a parcel now."""
    held = select(Parcel.compartment_id).where(
        Parcel.locker_id == locker_id,
        Parcel.state.in_([s.value for s in HOLDING_STATES]),
        Parcel.compartment_id.is_not(None),
    )
    held_ids = set((await session.scalars(held)).all())
    rows = await session.scalars(select(Compartment).where(Compartment.locker_id == locker_id))
    return [
        allocation.CompartmentView(
            id=c.id,
            label=c.label,
            size=SizeClass(c.size),
            temperature=TemperatureClass(c.temperature),
            usable=(
                c.id not in held_ids
                and c.locker_in_service
                and c.out_of_service_reason is None
                and c.door == "closed"
                and not c.occupied
            ),
        )
        for c in rows
    ]


async def has_consent(
    session: AsyncSession, recipient_id: int, carrier_id: int, tracking_number: str
) -> bool:
    found = await session.scalar(
        select(Consent.id).where(
            Consent.recipient_id == recipient_id,
            Consent.revoked_at.is_(None),
            or_(
                Consent.scope == "standing",
                (Consent.scope == "parcel")
                & (Consent.carrier_id == carrier_id)
                & (Consent.tracking_number == tracking_number),
            ),
        )
    )
    return found is not None


async def recipient_by_phone(
    session: AsyncSession, ctx: Context, phone: str, name: str | None, village_id: int | None
) -> Recipient:
    """The recipient with this phone number, added if new."""
    return (await find_or_add_recipient(session, ctx, phone, name, village_id))[0]


async def find_or_add_recipient(
    session: AsyncSession, ctx: Context, phone: str, name: str | None, village_id: int | None
) -> tuple[Recipient, bool]:
    """The recipient with this phone number and whether this call added it.

    A new one is inserted with ``ON CONFLICT DO NOTHING`` (no savepoint): when another
    transaction added the same phone a moment ago, nothing is inserted and that one is read.
    """
    recipient = await session.scalar(select(Recipient).where(Recipient.phone == phone))
    if recipient is not None:
        return recipient, False
    dialect = postgresql if ctx.db.dialect == "postgresql" else sqlite
    added = await session.scalar(
        dialect.insert(Recipient)
        .values(phone=phone, name=name, village_site_id=village_id, created_at=ctx.clock.now())
        .on_conflict_do_nothing(index_elements=["phone"])
        .returning(Recipient)
    )
    if added is not None:
        return added, True
    # Created concurrently: the other transaction's row (visible once it committed).
    found = await session.scalar(select(Recipient).where(Recipient.phone == phone))
    if found is None:
        raise RuntimeError(f"recipient {phone} neither added nor found")
    return found, False


class DepositService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def start(self, actor: Actor, request: DepositRequest) -> DepositStarted:
        """Reserve a compartment and open it. Raises the domain errors named below.

        :class:`LockerUnavailable` (offline or not active), :class:`ConsentRequired`,
        :class:`QuotaExceeded`, :class:`NoFreeCompartment`, :class:`NotAllowed`.
        """
        carrier_id = require_courier(actor)
        if request.consent_method and request.consent_method not in CONSENT_METHODS:
            raise InvalidRequest(f"consent_method must be one of {sorted(CONSENT_METHODS)}")
        now = self.ctx.clock.now()
        async with audited_refusals(self.ctx, actor), self.ctx.db.sessions.begin() as session:
            at_commit = commands.publish_at_commit(session)
            locker = await parcel_flow.lock_locker(session, request.locker_id)
            existing = await session.scalar(
                select(Parcel).where(
                    Parcel.carrier_id == carrier_id,
                    Parcel.tracking_number == request.tracking_number,
                    Parcel.direction == Direction.INBOUND.value,
                )
            )
            if existing is not None:
                return DepositStarted(await self._view(session, existing), None, created=False)
            if locker.status != "active" or not locker.online:
                raise LockerUnavailable(f"locker {locker.id} is {_availability(locker)}")
            recipient, added = await find_or_add_recipient(
                session, self.ctx, request.recipient_phone, request.recipient_name,
                request.village_site_id,
            )  # fmt: skip
            # A recipient added just now has agreed to nothing yet.
            if added or not await has_consent(
                session, recipient.id, carrier_id, request.tracking_number
            ):
                if request.consent_method is None:
                    raise ConsentRequired(
                        "the recipient has not agreed to locker delivery; obtain consent and "
                        "send consent_method, or deliver to the door"
                    )
                session.add(
                    Consent(
                        recipient_id=recipient.id, scope="parcel", carrier_id=carrier_id,
                        tracking_number=request.tracking_number, method=request.consent_method,
                        recorded_by_user_id=actor.user_id, recorded_at=now,
                    )
                )  # fmt: skip
            await self._check_quota(session, locker.id, carrier_id)
            parcel = Parcel(
                ref=new_ref(), carrier_id=carrier_id, tracking_number=request.tracking_number,
                direction=Direction.INBOUND.value, state=ParcelState.RESERVED.value,
                recipient_id=recipient.id,
                village_site_id=request.village_site_id or recipient.village_site_id,
                locker_id=locker.id, size=request.size.value,
                temperature=request.temperature.value, courier_user_id=actor.user_id,
                open_purpose=OpenPurpose.DEPOSIT.value, created_at=now, state_changed_at=now,
            )  # fmt: skip
            try:
                compartment = await allocate(session, parcel, request.size, request.temperature)
            except DuplicateParcel:
                existing = await session.scalar(
                    select(Parcel).where(
                        Parcel.carrier_id == carrier_id,
                        Parcel.tracking_number == request.tracking_number,
                        Parcel.direction == Direction.INBOUND.value,
                    )
                )
                assert existing is not None
                return DepositStarted(await self._view(session, existing), None, created=False)
            command = await self._open(
                session, actor, locker, parcel, compartment, OpenPurpose.DEPOSIT, new_parcel=True
            )
            view = await self._view(session, parcel, command)
        commands.publish_after_commit(self.ctx, at_commit)
        return DepositStarted(view, command.id, created=True)

    async def _check_quota(self, session: AsyncSession, locker_id: str, carrier_id: int) -> None:
        quota = await session.get(CarrierQuota, (locker_id, carrier_id))
        if quota is None:
            return
        held = await session.scalar(
            select(func.count(Parcel.id)).where(
                Parcel.locker_id == locker_id,
                Parcel.carrier_id == carrier_id,
                Parcel.state.in_([s.value for s in HOLDING_STATES]),
            )
        )
        if not allocation.quota_allows(held or 0, quota.max_compartments):
            raise QuotaExceeded(
                f"the carrier already holds {held} of its {quota.max_compartments} "
                f"compartments at locker {locker_id}"
            )

    async def _open(
        self,
        session: AsyncSession,
        actor: Actor,
        locker: Locker,
        parcel: Parcel,
        compartment: Compartment,
        purpose: OpenPurpose,
        *,
        new_parcel: bool = False,
    ) -> CommandRow:
        """Queue the signed opening, audited; refused by lockdown or the opening limits.
        Published at the commit when the session is opted in (:func:`commands.send_at_commit`).

        While an opening for the same purpose is still under way, that one is returned (a
        parcel this transaction created has none).
        """
        if not new_parcel:
            in_flight = await commands.in_flight_open(session, parcel.id, purpose.value)
            if in_flight is not None:
                return in_flight
        await guard_remote_open(
            session, self.ctx, actor, locker_id=locker.id, compartment=compartment.label,
            purpose=purpose.value, parcel_id=parcel.id,
        )  # fmt: skip
        parcel.open_purpose = purpose.value
        command = await commands.enqueue(
            session, self.ctx, locker_id=locker.id,
            args=OpenCompartment(compartment.label, purpose, parcel.ref),
            ttl=timedelta(seconds=self.ctx.settings.open_command_ttl_s), purpose=purpose.value,
            parcel_id=parcel.id, user_id=actor.user_id,
        )  # fmt: skip
        audit.record(
            session, at=self.ctx.clock.now(), locker_id=locker.id, action="open_requested",
            actor=actor, compartment=compartment.label, cause=purpose.value,
            parcel_id=parcel.id, command_id=command.id,
        )  # fmt: skip
        commands.send_at_commit(self.ctx, session, command, locker)
        return command

    async def _owned(self, session: AsyncSession, actor: Actor, parcel_id: int) -> Parcel:
        carrier_id = require_courier(actor)
        parcel = await session.get(Parcel, parcel_id)
        if parcel is None or parcel.carrier_id != carrier_id:
            raise NotFound(f"no parcel {parcel_id} of your carrier")
        await parcel_flow.lock_locker(session, parcel.locker_id)
        await session.refresh(parcel, with_for_update=True)
        return parcel

    async def confirm(self, actor: Actor, parcel_id: int) -> ParcelView:
        """The courier confirms the parcel is inside (when the occupancy sensor did not)."""
        async with self.ctx.db.sessions.begin() as session:
            at_commit = commands.publish_at_commit(session)
            parcel = await self._owned(session, actor, parcel_id)
            compartment = await session.get(Compartment, parcel.compartment_id)
            if compartment is None or compartment.door != "closed":
                raise InvalidRequest("close the compartment door first")
            locker = await session.get(Locker, parcel.locker_id)
            assert locker is not None
            await parcel_flow.advance(
                session, self.ctx, parcel, ParcelEvent.CONFIRMED, at=self.ctx.clock.now(),
                locker=locker,
            )  # fmt: skip
            view = await self._view(session, parcel)
        commands.publish_after_commit(self.ctx, at_commit)
        return view

    async def cancel(self, actor: Actor, parcel_id: int) -> ParcelView:
        """Cancel a deposit that has not been completed; the compartment is released."""
        now = self.ctx.clock.now()
        async with self.ctx.db.sessions.begin() as session:
            parcel = await self._owned(session, actor, parcel_id)
            locker = await session.get(Locker, parcel.locker_id)
            assert locker is not None
            await parcel_flow.advance(
                session, self.ctx, parcel, ParcelEvent.CANCELLED, at=now, locker=locker
            )
            await commands.cancel_open(session, parcel.id, now)
            audit.record(session, at=now, locker_id=locker.id, action="deposit_cancelled",
                         actor=actor, parcel_id=parcel.id)  # fmt: skip
            view = await self._view(session, parcel)
        self.ctx.wake_dispatcher()
        return view

    async def reopen(self, actor: Actor, parcel_id: int) -> DepositStarted:
        """Open the door again for a deposit not yet completed (moving to another compartment
        if its own went out of service, e.g. jammed)."""
        async with audited_refusals(self.ctx, actor), self.ctx.db.sessions.begin() as session:
            at_commit = commands.publish_at_commit(session)
            parcel = await self._owned(session, actor, parcel_id)
            if parcel.state not in (ParcelState.RESERVED, ParcelState.DOOR_OPENED):
                raise InvalidRequest(f"parcel {parcel.ref} is {parcel.state}; nothing to reopen")
            locker = await session.get(Locker, parcel.locker_id)
            assert locker is not None
            if not locker.online:
                raise LockerUnavailable(f"locker {locker.id} is offline")
            compartment = await session.get(Compartment, parcel.compartment_id)
            if (
                compartment is None
                or compartment.out_of_service_reason
                or not compartment.locker_in_service
            ):
                parcel.compartment_id = None
                await session.flush()
                compartment = await allocate(
                    session, parcel, SizeClass(parcel.size), TemperatureClass(parcel.temperature)
                )
            command = await self._open(
                session, actor, locker, parcel, compartment, OpenPurpose.DEPOSIT
            )
            view = await self._view(session, parcel, command)
        commands.publish_after_commit(self.ctx, at_commit)
        return DepositStarted(view, command.id, created=False)

    async def collect(self, actor: Actor, parcel_id: int) -> DepositStarted:
        """Open the door so the courier takes the parcel: an expired (or recalled) inbound
        parcel goes back to the carrier, an outbound one is collected for shipping."""
        async with audited_refusals(self.ctx, actor), self.ctx.db.sessions.begin() as session:
            at_commit = commands.publish_at_commit(session)
            parcel = await self._owned(session, actor, parcel_id)
            state = ParcelState(parcel.state)
            if state in (ParcelState.EXPIRED, ParcelState.NOTIFIED):
                purpose = OpenPurpose.RETURN_TO_CARRIER
            elif state is ParcelState.DROPPED_OFF:
                purpose = OpenPurpose.COLLECTION
            else:
                raise InvalidRequest(f"parcel {parcel.ref} is {parcel.state}; nothing to collect")
            locker = await session.get(Locker, parcel.locker_id)
            compartment = await session.get(Compartment, parcel.compartment_id)
            assert locker is not None
            assert compartment is not None
            if not locker.online:
                raise LockerUnavailable(f"locker {locker.id} is offline")
            command = await self._open(session, actor, locker, parcel, compartment, purpose)
            view = await self._view(session, parcel, command)
        commands.publish_after_commit(self.ctx, at_commit)
        return DepositStarted(view, command.id, created=False)

    async def get(self, actor: Actor, parcel_id: int) -> ParcelView:
        async with self.ctx.db.reader() as session:
            carrier_id = require_courier(actor)
            parcel = await session.get(Parcel, parcel_id)
            if parcel is None or parcel.carrier_id != carrier_id:
                raise NotFound(f"no parcel {parcel_id} of your carrier")
            last = await session.scalar(
                select(CommandRow)
                .where(CommandRow.parcel_id == parcel.id, CommandRow.action == "open_compartment")
                .order_by(CommandRow.created_at.desc())
            )
            return await self._view(session, parcel, last)

    async def list(
        self, actor: Actor, *, state: str | None, locker_id: str | None, limit: int
    ) -> list[ParcelView]:
        carrier_id = require_courier(actor)
        query = select(Parcel).where(Parcel.carrier_id == carrier_id)
        if state:
            query = query.where(Parcel.state == state)
        if locker_id:
            query = query.where(Parcel.locker_id == locker_id)
        async with self.ctx.db.reader() as session:
            parcels = (await session.scalars(query.order_by(Parcel.id.desc()).limit(limit))).all()
            return [await self._view(session, p) for p in parcels]

    async def _view(
        self, session: AsyncSession, parcel: Parcel, command: CommandRow | None = None
    ) -> ParcelView:
        await session.flush()
        # session.get: no round trip when the transaction has loaded them already.
        label = None
        if parcel.compartment_id is not None:
            compartment = await session.get(Compartment, parcel.compartment_id)
            label = compartment.label if compartment is not None else None
        phone = None
        if parcel.recipient_id is not None:
            recipient = await session.get(Recipient, parcel.recipient_id)
            phone = recipient.phone if recipient is not None else None
        return ParcelView.of(parcel, compartment=label, phone=phone, command=command)


async def allocate(
    session: AsyncSession, parcel: Parcel, size: SizeClass, temperature: TemperatureClass
) -> Compartment:
    """Give ``parcel`` the smallest free compartment that fits; flush it into the session.

    Raises :class:`NoFreeCompartment`. Safe against concurrent allocation (see module doc).
    """
    for candidate in allocation.candidates(
        await usable_compartments(session, parcel.locker_id), size, temperature
    ):
        parcel.compartment_id = candidate.id
        try:
            async with session.begin_nested():
                session.add(parcel)
                await session.flush()
        except IntegrityError:
            if await _same_parcel_exists(session, parcel):
                raise DuplicateParcel(parcel.tracking_number) from None
            continue  # somebody else's parcel took the compartment a moment ago
        compartment = await session.get(Compartment, candidate.id)
        assert compartment is not None
        return compartment
    raise NoFreeCompartment(
        f"no free {size.value} {temperature.value} compartment at locker {parcel.locker_id}"
    )


class DuplicateParcel(Exception):
    """The same carrier and tracking number was registered concurrently."""


async def _same_parcel_exists(session: AsyncSession, parcel: Parcel) -> bool:
    found = await session.scalar(
        select(Parcel.id).where(
            Parcel.carrier_id == parcel.carrier_id,
            Parcel.tracking_number == parcel.tracking_number,
            Parcel.direction == parcel.direction,
        )
    )
    return found is not None


def _availability(locker: Locker) -> str:
    if locker.status != "active":
        return locker.status
    return "offline" if not locker.online else "online"

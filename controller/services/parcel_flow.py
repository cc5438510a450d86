"""Moving a parcel through its lifecycle, with what each step brings along.

Everything that changes a parcel's state goes through :func:`advance`, whether the step comes
from a courier's API call or from a locker's event; the table in
:mod:`controller.domain.states` decides what is allowed. Side effects of entering a state:

* ``deposited`` (inbound): deadline set, a pickup code issued and its text queued, and the
  parcel moves straight on to ``notified``;
* ``dropped_off``, ``picked_up``, ``expired``, ``returned``, ``cancelled``, ``collected``: the
  parcel's codes are retired (and removed from the locker's cache);
* final states release the compartment (the partial unique index stops counting the parcel).

Callers lock the locker row before the parcel row (:func:`lock_locker`), the same order the
ingest uses, so concurrent API calls and device events cannot deadlock.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Carrier, Compartment, Locker, Parcel, Recipient
from controller.domain.errors import Conflict, NotFound
from controller.domain.states import (
    HOLDING_STATES,
    IllegalTransition,
    ParcelEvent,
    ParcelState,
    next_parcel_state,
)
from controller.services import codes, notifications
from controller.services.context import Context

log = logging.getLogger("lockerfleet.parcels")

RETIRE_CODES_ON = frozenset(
    {
        ParcelState.DROPPED_OFF,
        ParcelState.PICKED_UP,
        ParcelState.EXPIRED,
        ParcelState.RETURNED,
        ParcelState.CANCELLED,
        ParcelState.COLLECTED,
    }
)


async def lock_locker(session: AsyncSession, locker_id: str) -> Locker:
    """Load and lock a locker row (PostgreSQL ``FOR UPDATE``). Raises :class:`NotFound`."""
    locker = await session.get(Locker, locker_id, with_for_update=True)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    return locker


async def lock_fleet_locker(session: AsyncSession, locker_id: str, why: str = "") -> Locker:
    """:func:`lock_locker`, refusing a decommissioned locker with :class:`Conflict` (its
    message ends with ``why``)."""
    locker = await lock_locker(session, locker_id)
    if locker.status == "decommissioned":
        raise Conflict(f"locker {locker_id} is decommissioned{why}")
    return locker


async def advance(
    session: AsyncSession,
    ctx: Context,
    parcel: Parcel,
    event: ParcelEvent,
    *,
    at: datetime,
    locker: Locker,
    strict: bool = True,
) -> bool:
    """Apply ``event`` to ``parcel`` and everything that comes with its new state.

    Returns whether the state changed. With ``strict`` an event the lifecycle does not allow
    raises :class:`IllegalTransition`; without (device events, which may be late or repeated)
    it is logged and ignored.
    """
    try:
        new_state = next_parcel_state(ParcelState(parcel.state), event)
    except IllegalTransition:
        if strict:
            raise
        log.info("parcel %s in %s ignores %s", parcel.ref, parcel.state, event)
        return False
    parcel.state = new_state.value
    parcel.state_changed_at = at
    parcel.version += 1
    if new_state is ParcelState.DEPOSITED:
        await _on_deposited(session, ctx, parcel, at=at, locker=locker)
    elif new_state in RETIRE_CODES_ON:
        parcel.open_purpose = None
        await codes.retire(session, ctx, parcel_id=parcel.id, locker_id=locker.id, at=at)
    return True


async def _on_deposited(
    session: AsyncSession, ctx: Context, parcel: Parcel, *, at: datetime, locker: Locker
) -> None:
    parcel.deposited_at = at
    parcel.deadline_at = at + ctx.storage_window
    parcel.open_purpose = None
    compartment = await session.get(Compartment, parcel.compartment_id)
    # The text's addressee and sender in one round trip.
    found = (
        await session.execute(
            select(
                select(Recipient.phone)
                .where(Recipient.id == parcel.recipient_id)
                .scalar_subquery(),
                select(Carrier.name).where(Carrier.id == parcel.carrier_id).scalar_subquery(),
            )
        )
    ).first()
    if compartment is None or found is None or found[0] is None or found[1] is None:
        raise NotFound(f"parcel {parcel.ref} lost its compartment, recipient or carrier")
    phone, carrier_name = found
    code = await codes.issue(
        session,
        ctx,
        parcel=parcel,
        locker=locker,
        compartment_label=compartment.label,
        purpose="pickup",
        expires_at=parcel.deadline_at,
    )
    notifications.queue(
        session,
        ctx,
        to=phone,
        body=notifications.pickup_text(
            carrier=carrier_name,
            place=locker.name,
            compartment=compartment.label,
            code=code,
            deadline=parcel.deadline_at,
        ),
        parcel_id=parcel.id,
    )
    await advance(session, ctx, parcel, ParcelEvent.CODE_ISSUED, at=at, locker=locker)


async def holding_parcel(session: AsyncSession, compartment_id: int) -> Parcel | None:
    """Return the parcel that holds a compartment now, if any (locked for update)."""
    return (
        await session.scalars(
            select(Parcel)
            .where(
                Parcel.compartment_id == compartment_id,
                Parcel.state.in_([s.value for s in HOLDING_STATES]),
            )
            .with_for_update()
        )
    ).first()

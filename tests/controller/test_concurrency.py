"""Two controller instances on one database never give one compartment to two parcels.

The instances are two runtimes with their own engines and connection pools on the same
database (a SQLite file, or a PostgreSQL schema), as two replicas on two machines would be.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller.clock import ManualClock
from controller.db.models import Compartment, Parcel, Recipient
from controller.domain.errors import NoFreeCompartment
from controller.domain.states import HOLDING_STATES
from controller.runtime import Runtime, build_runtime
from controller.services.deposits import DepositRequest
from controller.services.views import DepositStarted
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from protocol.messages import SizeClass, TemperatureClass
from tests.controller.conftest import controller_settings
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker

AMBIENT = sum(1 for c in DEFAULT_LAYOUT if c.temperature is TemperatureClass.AMBIENT)


@pytest.fixture
async def second(migrated_url: str, topic_root: str, clock: ManualClock) -> AsyncIterator[Runtime]:
    rt = build_runtime(
        controller_settings(migrated_url, topic_root), clock=clock, sender=RecordingSender()
    )
    try:
        yield rt
    finally:
        await rt.stop()


async def test_concurrent_deposits_on_two_instances_never_share_a_compartment(
    runtime: Runtime, second: Runtime, seeded: Seeded
) -> None:
    locker_id = next(iter(seeded.lockers))
    await ScriptedLocker(runtime, locker_id).come_online(LAYOUT)
    couriers = [
        await rt.services.admin.authenticate(seeded.tokens["courier"]) for rt in (runtime, second)
    ]
    attempts = AMBIENT + 6

    async def deposit(n: int) -> DepositStarted | NoFreeCompartment:
        rt = (runtime, second)[n % 2]
        courier = couriers[n % 2]
        assert courier is not None
        request = DepositRequest(
            f"SF9{n:09d}",
            locker_id,
            SizeClass.S,
            TemperatureClass.AMBIENT,
            f"1370000{n:04d}",
            consent_method="app",
        )
        try:
            return await rt.services.deposits.start(courier, request)
        except NoFreeCompartment as exc:
            return exc

    results = await asyncio.gather(*(deposit(n) for n in range(attempts)))
    started = [r for r in results if isinstance(r, DepositStarted)]
    refused = [r for r in results if isinstance(r, NoFreeCompartment)]
    assert len(started) == AMBIENT, "every ambient compartment fits an S parcel, once"
    assert len(refused) == attempts - AMBIENT
    labels = Counter(r.parcel.compartment for r in started)
    assert all(n == 1 for n in labels.values()), labels
    async with runtime.db.reader() as session:
        holding = (
            await session.scalars(
                select(Parcel.compartment_id).where(
                    Parcel.state.in_([s.value for s in HOLDING_STATES])
                )
            )
        ).all()
    assert len(holding) == len(set(holding)) == AMBIENT


async def test_the_database_itself_refuses_a_second_parcel_in_a_compartment(
    runtime: Runtime, seeded: Seeded
) -> None:
    """Even code that skipped the allocation logic could not double-book: the partial unique
    index refuses it, and a parcel in a final state does not count."""
    locker_id = next(iter(seeded.lockers))
    now = runtime.ctx.clock.now()
    async with runtime.db.sessions.begin() as session:
        compartment = (
            await session.scalars(select(Compartment).where(Compartment.locker_id == locker_id))
        ).first()
        assert compartment is not None
        compartment_id = compartment.id

    def parcel(state: str) -> Parcel:
        return Parcel(
            ref=uuid.uuid4().hex[:12],
            carrier_id=seeded.carrier_ids["sf"],
            tracking_number=uuid.uuid4().hex[:12],
            direction="inbound",
            state=state,
            locker_id=locker_id,
            compartment_id=compartment_id,
            size="S",
            temperature="ambient",
            created_at=now,
            state_changed_at=now,
        )

    async with runtime.db.sessions.begin() as session:
        session.add(parcel("picked_up"))
        session.add(parcel("notified"))
    with pytest.raises(IntegrityError):
        async with runtime.db.sessions.begin() as session:
            session.add(parcel("reserved"))


async def test_two_instances_adding_the_same_new_recipient_make_one(
    runtime: Runtime, second: Runtime, seeded: Seeded
) -> None:
    """Concurrent first deposits for one new phone number, at two lockers through two
    instances: both start, and the villager is one recipient (the loser of the insert reads
    the winner's row instead of failing)."""
    lockers = list(seeded.lockers)[:2]
    for rt, locker_id in zip((runtime, second), lockers, strict=True):
        await ScriptedLocker(rt, locker_id).come_online(LAYOUT)
    couriers = [
        await rt.services.admin.authenticate(seeded.tokens["courier"]) for rt in (runtime, second)
    ]
    phone = f"139{uuid.uuid4().int % 10**8:08d}"

    async def deposit(n: int) -> DepositStarted:
        courier = couriers[n]
        assert courier is not None
        request = DepositRequest(
            f"SF8{n:09d}", lockers[n], SizeClass.S, TemperatureClass.AMBIENT, phone,
            consent_method="app",
        )  # fmt: skip
        return await (runtime, second)[n].services.deposits.start(courier, request)

    started = await asyncio.gather(deposit(0), deposit(1))
    assert [s.created for s in started] == [True, True]
    async with runtime.db.reader() as session:
        recipients = (
            await session.scalars(select(Recipient.id).where(Recipient.phone == phone))
        ).all()
        owners = (
            await session.scalars(
                select(Parcel.recipient_id).where(Parcel.id.in_([s.parcel.id for s in started]))
            )
        ).all()
    assert len(recipients) == 1
    assert owners == [recipients[0]] * 2

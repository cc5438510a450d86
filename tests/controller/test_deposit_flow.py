"""The inbound parcel lifecycle through the services, with a scripted locker feeding the ingest.

No broker here: these tests pin down the rules (allocation, consent, codes, door events,
pickup, duplicates) against a real database. The same flow over Mosquitto with the simulated
firmware is in test_end_to_end.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.db.models import AuditEntry, Command, DeviceMessage, Parcel, PickupCode
from controller.runtime import Runtime
from controller.services.deposits import DepositRequest
from controller.testing.seed import Seeded
from protocol.codes import code_hash
from protocol.messages import (
    DoorCause,
    DoorClosed,
    DoorOpened,
    Pickup,
    SizeClass,
    TemperatureClass,
)
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker, actor


async def online_locker(runtime: Runtime, seeded: Seeded) -> ScriptedLocker:
    locker_id = next(iter(seeded.lockers))
    locker = ScriptedLocker(runtime, locker_id)
    await locker.come_online(LAYOUT)
    return locker


async def test_deposit_to_pickup(runtime: Runtime, seeded: Seeded, sms: RecordingSender) -> None:
    locker = await online_locker(runtime, seeded)
    courier = await actor(runtime, seeded, "courier")
    started = await runtime.services.deposits.start(
        courier,
        DepositRequest(
            "SF1000000001",
            locker.locker_id,
            SizeClass.M,
            TemperatureClass.AMBIENT,
            "13800000001",
            consent_method="sms_reply",
        ),
    )
    assert started.created and started.parcel.state == "reserved"
    # The smallest free compartment that fits an M parcel is B01 (the S ones are too small).
    assert started.parcel.compartment == "B01"
    async with runtime.db.reader() as session:
        command = await session.get(Command, started.command_id)
        assert command is not None and command.action == "open_compartment"
        assert command.args["compartment"] == "B01"

    await locker.send(
        locker.event(DoorOpened("B01", DoorCause.COMMAND, started.command_id)),
        locker.event(DoorClosed("B01", True, 9000)),
    )
    parcel = await runtime.services.deposits.get(courier, started.parcel.id)
    assert parcel.state == "notified" and parcel.deadline_at is not None
    code = sms.code_for("13800000001") if sms.sent else None
    assert code is None, "texts go out only through the outbox dispatcher"
    assert await runtime.notifier.run_once() == 1
    code = sms.code_for("13800000001")

    keys = runtime.ctx.keys
    hashed = code_hash(keys.code_key(locker.locker_id, 1), locker.locker_id, code)
    async with runtime.db.reader() as session:
        stored = (await session.scalars(select(PickupCode))).all()
        assert [c.code_hash for c in stored] == [hashed], "only the keyed hash is stored"
        sync = (await session.scalars(select(Command).where(Command.action == "sync_codes"))).all()
        assert len(sync) == 1 and sync[0].args["add"][0]["hash"] == hashed

    await locker.send(
        locker.event(Pickup("B01", hashed, parcel.ref, False)),
        locker.event(DoorOpened("B01", DoorCause.KEYPAD, code_hash=hashed)),
        locker.event(DoorClosed("B01", False, 4000)),
    )
    parcel = await runtime.services.deposits.get(courier, parcel.id)
    assert parcel.state == "picked_up" and parcel.picked_up_via == "keypad"
    state = await runtime.services.lockers.state(
        await actor(runtime, seeded, "technician"), locker.locker_id
    )
    b01 = next(c for c in state.compartments or [] if c.label == "B01")
    assert not b01.occupied and b01.door == "closed" and b01.parcel_ref is None
    async with runtime.db.reader() as session:
        openings = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "door_opened").order_by(AuditEntry.id)
            )
        ).all()
        assert [(a.cause, a.parcel_id) for a in openings] == [
            ("command", parcel.id),
            ("keypad", parcel.id),
        ]
        code_row = (await session.scalars(select(PickupCode))).one()
        assert not code_row.active


async def test_duplicated_and_replayed_events_change_nothing(
    runtime: Runtime, seeded: Seeded
) -> None:
    locker = await online_locker(runtime, seeded)
    courier = await actor(runtime, seeded, "courier")
    started = await runtime.services.deposits.start(
        courier,
        DepositRequest(
            "SF1000000002",
            locker.locker_id,
            SizeClass.S,
            TemperatureClass.AMBIENT,
            "13800000002",
            consent_method="app",
        ),
    )
    opened = locker.event(DoorOpened("A01", DoorCause.COMMAND, started.command_id))
    closed = locker.event(DoorClosed("A01", True, 5000))
    first = await locker.send(opened, closed)
    assert first.stored == 2 and first.duplicates == 0
    again = await locker.send(closed, opened, closed)
    assert again.stored == 0 and again.duplicates == 2
    assert len(again.acks) == 1, "duplicates are acknowledged again so the locker stops resending"
    async with runtime.db.reader() as session:
        assert await session.scalar(select(func.count(DeviceMessage.id))) == 3  # birth + 2
        parcels = (await session.scalars(select(Parcel))).all()
        assert [p.state for p in parcels] == ["notified"]
        codes = await session.scalar(select(func.count(PickupCode.id)))
        assert codes == 1, "a replayed door closing must not issue a second code"


async def test_a_code_already_active_at_the_locker_is_drawn_again(
    runtime: Runtime, seeded: Seeded, sms: RecordingSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second parcel's first draw is the code the first parcel holds at the same locker:
    nothing is inserted for it, the transaction goes on, and the next draw is the one used."""
    draws = iter(["111111", "111111", "222222"])
    monkeypatch.setattr("controller.services.codes.new_code", lambda: next(draws))
    locker = await online_locker(runtime, seeded)
    courier = await actor(runtime, seeded, "courier")
    for n, phone in enumerate(("13800000011", "13800000012")):
        started = await runtime.services.deposits.start(
            courier,
            DepositRequest(
                f"SF10000000{n + 2}", locker.locker_id, SizeClass.S, TemperatureClass.AMBIENT,
                phone, consent_method="sms_reply",
            ),
        )  # fmt: skip
        label = started.parcel.compartment
        assert label is not None
        await locker.send(
            locker.event(DoorOpened(label, DoorCause.COMMAND, started.command_id)),
            locker.event(DoorClosed(label, True, 3000)),
        )
        assert (await runtime.services.deposits.get(courier, started.parcel.id)).state == (
            "notified"
        )
    assert next(draws, None) is None, "three draws: the repeated one was drawn again"
    assert await runtime.notifier.run_once() == 2
    assert [sms.code_for("13800000011"), sms.code_for("13800000012")] == ["111111", "222222"]
    key = runtime.ctx.keys.code_key(locker.locker_id, 1)
    async with runtime.db.reader() as session:
        active = (await session.scalars(select(PickupCode).where(PickupCode.active))).all()
        syncs = (
            await session.scalars(
                select(Command).where(Command.action == "sync_codes").order_by(Command.counter)
            )
        ).all()
    hashes = [code_hash(key, locker.locker_id, c) for c in ("111111", "222222")]
    assert sorted(c.code_hash for c in active) == sorted(hashes)
    assert [[e["hash"] for e in s.args["add"]] for s in syncs] == [[h] for h in hashes]
    assert [(s.args["from_version"], s.args["to_version"]) for s in syncs] == [(0, 1), (1, 2)]

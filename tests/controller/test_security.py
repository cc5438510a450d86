"""Defence against mass opening: per-minute limits on remote openings per user, carrier and
fleet hold under a burst of concurrent requests (also split across two replicas on one
database), every refusal is audited and raises the fleet's spike alarm, and the lockdown
refuses every remote opening — but not a keypad pickup — until an admin lifts it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from controller.clock import ManualClock
from controller.db.models import Alarm, AuditEntry, Command, Parcel
from controller.domain.errors import FleetLockedDown, OpenLimitExceeded
from controller.runtime import Runtime, build_runtime
from controller.services.context import Actor
from controller.services.deposits import DepositRequest
from controller.services.views import DepositStarted
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
from tests.controller.conftest import controller_settings
from tests.controller.support import LAYOUT, RecordingSender, ScriptedLocker, actor


@pytest.fixture
async def lockers(runtime: Runtime, seeded: Seeded) -> list[ScriptedLocker]:
    scripted = [ScriptedLocker(runtime, locker_id) for locker_id in sorted(seeded.lockers)]
    for locker in scripted:
        await locker.come_online(LAYOUT)
    return scripted


def request(
    locker_id: str, tracking: str, phone: str = "13600000001", village: int | None = None
) -> DepositRequest:
    return DepositRequest(
        tracking, locker_id, SizeClass.S, TemperatureClass.AMBIENT, phone,
        village_site_id=village, consent_method="in_person",
    )  # fmt: skip


async def count(runtime: Runtime, model: type[Parcel] | type[Command]) -> int:
    async with runtime.db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def audited(runtime: Runtime, action: str) -> list[AuditEntry]:
    async with runtime.db.reader() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
        return list(rows)


async def burst(
    runtime: Runtime, courier: Actor, locker_id: str, n: int, prefix: str
) -> list[DepositStarted | BaseException]:
    return await asyncio.gather(
        *(
            runtime.services.deposits.start(courier, request(locker_id, f"{prefix}{i:06d}"))
            for i in range(n)
        ),
        return_exceptions=True,
    )


async def test_a_burst_over_the_user_limit_is_refused_and_every_refusal_audited(
    runtime: Runtime, seeded: Seeded, lockers: list[ScriptedLocker]
) -> None:
    runtime.settings.open_limit_per_user_per_min = 3
    courier = await actor(runtime, seeded, "courier")
    results = await burst(runtime, courier, lockers[0].locker_id, 9, "SF81")
    granted = [r for r in results if isinstance(r, DepositStarted)]
    refused = [r for r in results if isinstance(r, OpenLimitExceeded)]
    assert (len(granted), len(refused)) == (3, 6), results
    assert all(r.retry_after_s >= 1 for r in refused)
    assert await count(runtime, Parcel) == 3 and await count(runtime, Command) == 3
    assert len(await audited(runtime, "open_requested")) == 3
    refusals = await audited(runtime, "open_refused")
    assert len(refusals) == 6
    assert {(e.cause, e.actor_user_id, e.detail["scope"]) for e in refusals} == {
        ("open_limit_exceeded", courier.user_id, f"user:{courier.user_id}")
    }
    async with runtime.db.reader() as session:
        [spike] = list(await session.scalars(select(Alarm).where(Alarm.type == "open_spike")))
    assert (spike.locker_id, spike.severity, spike.count) == ("", "critical", 6)


async def test_carrier_and_fleet_limits(
    runtime: Runtime, seeded: Seeded, lockers: list[ScriptedLocker], clock: ManualClock
) -> None:
    runtime.settings.open_limit_per_carrier_per_min = 2
    sf = await actor(runtime, seeded, "courier")
    zto = await actor(runtime, seeded, "courier2")
    locker_id = lockers[0].locker_id
    await runtime.services.deposits.start(sf, request(locker_id, "SF82000001"))
    await runtime.services.deposits.start(sf, request(locker_id, "SF82000002"))
    with pytest.raises(OpenLimitExceeded) as carrier:
        await runtime.services.deposits.start(sf, request(locker_id, "SF82000003"))
    assert carrier.value.request["scope"] == f"carrier:{sf.carrier_id}"
    await runtime.services.deposits.start(zto, request(locker_id, "ZT82000001"))

    clock.advance(minutes=1)  # a new minute: the counters start again
    runtime.settings.open_limit_fleet_per_min = 2
    await runtime.services.deposits.start(sf, request(locker_id, "SF82000003"))
    await runtime.services.deposits.start(zto, request(locker_id, "ZT82000002"))
    with pytest.raises(OpenLimitExceeded) as fleet:
        await runtime.services.deposits.start(zto, request(locker_id, "ZT82000003"))
    assert fleet.value.request["scope"] == "fleet"
    assert [e.detail["scope"] for e in await audited(runtime, "open_refused")] == [
        f"carrier:{sf.carrier_id}", "fleet",
    ]  # fmt: skip


async def test_the_limit_holds_across_two_replicas_on_one_database(
    runtime: Runtime, seeded: Seeded, lockers: list[ScriptedLocker], migrated_url: str,
    topic_root: str, clock: ManualClock,
) -> None:  # fmt: skip
    other = build_runtime(
        controller_settings(migrated_url, topic_root), clock=clock, sender=RecordingSender()
    )
    try:
        for replica in (runtime, other):
            replica.settings.open_limit_per_user_per_min = 4
        courier = await actor(runtime, seeded, "courier")
        results = [
            r
            for group in await asyncio.gather(
                burst(runtime, courier, lockers[0].locker_id, 5, "SF83A"),
                burst(other, courier, lockers[1].locker_id, 5, "SF83B"),
            )
            for r in group
        ]
    finally:
        await other.stop()
    granted = [r for r in results if isinstance(r, DepositStarted)]
    assert len(granted) == 4, results
    assert all(isinstance(r, OpenLimitExceeded) for r in results if r not in granted)
    assert len(await audited(runtime, "open_refused")) == 6
    assert await count(runtime, Command) == 4


async def test_lockdown_refuses_remote_openings_until_lifted_but_not_keypad_pickups(
    api: httpx.AsyncClient, runtime: Runtime, seeded: Seeded, lockers: list[ScriptedLocker],
    sms: RecordingSender,
) -> None:  # fmt: skip
    locker = lockers[0]
    courier = await actor(runtime, seeded, "courier")
    agent = await actor(runtime, seeded, "agent")
    village = sorted(agent.village_ids)[0]
    # one parcel waiting for its recipient, one deposit whose door command is still queued
    waiting = await runtime.services.deposits.start(
        courier, request(locker.locker_id, "SF8400001", village=village)
    )
    label = waiting.parcel.compartment
    assert label is not None
    await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, waiting.command_id)),
        locker.event(DoorClosed(label, True, 3000)),
    )
    await runtime.notifier.run_once()
    code = sms.code_for("13600000001")
    queued = await runtime.services.deposits.start(courier, request(locker.locker_id, "SF8400002"))

    admin = {"Authorization": f"Bearer {seeded.tokens['admin']}"}
    operator = {"Authorization": f"Bearer {seeded.tokens['operator']}"}
    body = {"enabled": True, "reason": "mass opening suspected"}
    denied = await api.put("/api/v1/fleet/lockdown", json=body, headers=operator)
    assert denied.status_code == 403
    on = await api.put("/api/v1/fleet/lockdown", json=body, headers=admin)
    assert on.status_code == 200 and on.json()["enabled"] is True
    assert on.json()["cancelled_commands"] == 2, "both, as neither was answered in this script"
    async with runtime.db.reader() as session:
        withdrawn = await session.get(Command, queued.command_id)
        assert withdrawn is not None and withdrawn.state == "cancelled"
    assert (await api.get("/api/v1/fleet/lockdown", headers=operator)).json()["enabled"] is True

    deposit = {
        "tracking_number": "SF8400003", "locker_id": locker.locker_id, "size": "S",
        "recipient_phone": "13600000002", "consent_method": "in_person",
    }  # fmt: skip
    courier_auth = {"Authorization": f"Bearer {seeded.tokens['courier']}"}
    refused = await api.post("/api/v1/deposits", json=deposit, headers=courier_auth)
    assert refused.status_code == 423 and refused.json()["error"]["code"] == "fleet_lockdown"
    with pytest.raises(FleetLockedDown):
        await runtime.services.deposits.reopen(courier, queued.parcel.id)
    with pytest.raises(FleetLockedDown):
        await runtime.services.deposits.collect(courier, waiting.parcel.id)
    await runtime.services.agents.authorise(agent, "13600000001", "in_person")
    with pytest.raises(FleetLockedDown):
        await runtime.services.agents.collect(agent, waiting.parcel.id, code=None, standing=True)
    refusals = await audited(runtime, "open_refused")
    assert [(e.cause, e.actor_kind) for e in refusals] == [
        ("fleet_lockdown", "courier"), ("fleet_lockdown", "courier"),
        ("fleet_lockdown", "courier"), ("fleet_lockdown", "agent"),
    ]  # fmt: skip
    assert await count(runtime, Parcel) == 2, "the refused deposit left nothing behind"

    hashed = code_hash(runtime.ctx.keys.code_key(locker.locker_id, 1), locker.locker_id, code)
    await locker.send(
        locker.event(Pickup(label, hashed, waiting.parcel.ref, False)),
        locker.event(DoorOpened(label, DoorCause.KEYPAD, code_hash=hashed)),
        locker.event(DoorClosed(label, False, 5000)),
    )
    async with runtime.db.reader() as session:
        picked = await session.get(Parcel, waiting.parcel.id)
        assert picked is not None and picked.state == "picked_up", "keypad pickups still work"

    off = await api.put("/api/v1/fleet/lockdown", json={"enabled": False}, headers=admin)
    assert off.status_code == 200 and off.json()["enabled"] is False
    allowed = await api.post("/api/v1/deposits", json=deposit, headers=courier_auth)
    assert allowed.status_code == 201, allowed.text
    assert [e.action for e in await audited(runtime, "lockdown_on")] == ["lockdown_on"]
    assert len(await audited(runtime, "lockdown_off")) == 1

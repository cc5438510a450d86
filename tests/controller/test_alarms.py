"""Alarms raised by what a scripted locker reports through the ingest, and cleared when the
condition ends (or by an operator, for the security alarms); one open alarm per locker,
compartment and type; the lifecycle table; the presence watchdog; the schema migration."""

from __future__ import annotations

import dataclasses

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.engine import Connection

from controller.clock import ManualClock, to_ms
from controller.db.engine import open_database
from controller.db.models import Alarm, AuditEntry, Base, Compartment
from controller.domain.alarms import (
    ALARM_TRANSITIONS,
    AlarmEvent,
    AlarmState,
    AlarmType,
    firmware_outdated,
    next_alarm_state,
)
from controller.domain.states import IllegalTransition
from controller.runtime import Runtime
from controller.testing.seed import Seeded
from protocol.messages import (
    Action,
    CodeRejected,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorLeftOpen,
    DoorOpened,
    EventData,
    Outcome,
    PowerChanged,
    PowerSource,
    PresenceState,
    ResultStatus,
    Sensor,
    SensorFault,
    SensorRecovered,
    SizeClass,
    Tamper,
    Telemetry,
    TemperatureClass,
    TemperatureExcursion,
    TemperatureReading,
    TemperatureRestored,
)
from tests.controller.support import ScriptedLocker, actor, start_deposit


async def alarms_of(runtime: Runtime, locker_id: str, type_: AlarmType) -> list[Alarm]:
    async with runtime.db.reader() as session:
        rows = await session.scalars(
            select(Alarm)
            .where(Alarm.locker_id == locker_id, Alarm.type == type_.value)
            .order_by(Alarm.id)
        )
        return list(rows)


def telemetry(
    locker: ScriptedLocker,
    *,
    power: PowerSource = PowerSource.MAINS,
    battery: int = 100,
    skew_ms: int = 0,
    temperatures: tuple[TemperatureReading, ...] = (),
) -> Telemetry:
    return Telemetry(
        locker.locker_id, locker.boot_id, locker.seq, locker.now_ms() + skew_ms, 100, power,
        battery, -70, 0, 0, 0, temperatures,
    )  # fmt: skip


def test_the_lifecycle_table_refuses_everything_else() -> None:
    assert next_alarm_state(AlarmState.ACTIVE, AlarmEvent.ACKNOWLEDGE) is AlarmState.ACKNOWLEDGED
    assert next_alarm_state(AlarmState.ACKNOWLEDGED, AlarmEvent.CLEAR) is AlarmState.CLEARED
    assert next_alarm_state(AlarmState.ACKNOWLEDGED, AlarmEvent.REPEATED) is (
        AlarmState.ACKNOWLEDGED
    ), "a repeat does not ask an operator again"
    for state in AlarmState:
        for event in AlarmEvent:
            if (state, event) in ALARM_TRANSITIONS:
                continue
            with pytest.raises(IllegalTransition) as refused:
                next_alarm_state(state, event)
            assert refused.value.state == state and refused.value.event == event
    assert not any(state is AlarmState.CLEARED for state, _ in ALARM_TRANSITIONS), (
        "a cleared alarm is history"
    )


def test_firmware_versions_compare_as_versions() -> None:
    assert firmware_outdated("1.9.9", "1.10.0")
    assert firmware_outdated("1.10.0-rc1", "1.10.0")
    assert not firmware_outdated("1.10.0+build7", "1.10.0")
    assert not firmware_outdated("2.0.0", "1.10.0")
    assert not firmware_outdated("0.0.1", None)


async def test_the_migrations_make_exactly_the_models(migrated_url: str) -> None:
    db = open_database(migrated_url)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with db.engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await db.dispose()
    assert diff == []


CASES: list[tuple[AlarmType, str, EventData, EventData, str]] = [
    (AlarmType.DOOR_LEFT_OPEN, "A01", DoorLeftOpen("A01", 300_000),
     DoorClosed("A01", False, 320_000), "major"),
    (AlarmType.SENSOR_FAULT, "B01", SensorFault("B01", Sensor.OCCUPANCY, "stuck at 1"),
     SensorRecovered("B01", Sensor.OCCUPANCY), "minor"),
    (AlarmType.TEMPERATURE_EXCURSION, "R01", TemperatureExcursion("R01", 95, 20, 60),
     TemperatureRestored("R01", 41), "major"),
    (AlarmType.ON_BATTERY, "", PowerChanged(PowerSource.BATTERY, 80),
     PowerChanged(PowerSource.MAINS, 80), "minor"),
    (AlarmType.LOW_BATTERY, "", PowerChanged(PowerSource.BATTERY, 15),
     PowerChanged(PowerSource.MAINS, 90), "major"),
    (AlarmType.DOOR_JAMMED, "C01", DoorJammed("C01"),
     DoorOpened("C01", DoorCause.SERVICE), "major"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("type_", "label", "fault", "ending", "severity"), CASES, ids=[c[0].value for c in CASES]
)
async def test_each_fault_raises_its_alarm_and_its_end_clears_it(
    runtime: Runtime, locker: ScriptedLocker, clock: ManualClock, type_: AlarmType, label: str,
    fault: EventData, ending: EventData, severity: str,
) -> None:  # fmt: skip
    await locker.send(locker.event(fault))
    [raised] = await alarms_of(runtime, locker.locker_id, type_)
    assert (raised.state, raised.severity, raised.compartment) == ("active", severity, label)
    clock.advance(minutes=5)
    await locker.send(locker.event(ending))
    [cleared] = await alarms_of(runtime, locker.locker_id, type_)
    assert cleared.state == "cleared" and cleared.cleared_by_user_id is None
    assert cleared.clear_reason and cleared.cleared_at == clock.now()


async def test_a_jammed_door_is_an_alarm_and_takes_the_compartment_out_of_service(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    await locker.send(locker.event(DoorJammed("C02", "0" * 32)))
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.DOOR_JAMMED)
    assert alarm.compartment == "C02" and alarm.detail["command_id"] == "0" * 32
    async with runtime.db.reader() as session:
        compartment = await session.scalar(
            select(Compartment).where(
                Compartment.locker_id == locker.locker_id, Compartment.label == "C02"
            )
        )
        assert compartment is not None and compartment.out_of_service_reason == "door jammed"


@pytest.mark.parametrize(
    ("type_", "fault"),
    [
        (AlarmType.DOOR_FORCED, DoorForced("A02")),
        (AlarmType.DOOR_FORCED, DoorOpened("A03", DoorCause.COMMAND, "f" * 32)),
        (AlarmType.TAMPER, Tamper("tilt")),
        (AlarmType.KEYPAD_LOCKOUT, CodeRejected(5, 60_000)),
    ],
    ids=["door_forced", "opened_by_unknown_command", "tamper", "keypad_lockout"],
)
async def test_security_alarms_stay_until_a_person_clears_them(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock,
    type_: AlarmType, fault: EventData,
) -> None:  # fmt: skip
    await locker.send(locker.event(fault))
    await locker.send(locker.event(DoorClosed("A02", False, 1000)))
    [alarm] = await alarms_of(runtime, locker.locker_id, type_)
    assert alarm.state == "active"
    operator = await actor(runtime, seeded, "operator")
    seen = await runtime.services.health.acknowledge(operator, alarm.id)
    assert seen.state == "acknowledged" and seen.acknowledged_by_user_id == operator.user_id
    with pytest.raises(IllegalTransition):
        await runtime.services.health.acknowledge(operator, alarm.id)
    clock.advance(minutes=1)
    done = await runtime.services.health.clear(operator, alarm.id, "checked on site")
    assert (done.state, done.cleared_by_user_id, done.clear_reason) == (
        "cleared", operator.user_id, "checked on site",
    )  # fmt: skip
    with pytest.raises(IllegalTransition):
        await runtime.services.health.acknowledge(operator, alarm.id)
    with pytest.raises(IllegalTransition):
        await runtime.services.health.clear(operator, alarm.id, None)
    async with runtime.db.reader() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.actor_user_id == operator.user_id)
            )
        )
    assert actions == ["alarm_acknowledge", "alarm_clear"]


async def test_a_forced_door_is_audited(runtime: Runtime, locker: ScriptedLocker) -> None:
    await locker.send(locker.event(DoorForced("B02")))
    async with runtime.db.reader() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "door_forced"))
    assert entry is not None and entry.compartment == "B02" and entry.actor_kind == "unknown"


async def test_repeats_count_on_the_open_alarm_and_history_is_kept(
    runtime: Runtime, locker: ScriptedLocker, clock: ManualClock
) -> None:
    first_seen = clock.now()
    await locker.send(locker.event(DoorLeftOpen("A01", 300_000)))
    clock.advance(minutes=5)
    await locker.send(locker.event(DoorLeftOpen("A01", 600_000)))
    await locker.send(locker.event(DoorLeftOpen("A02", 300_000)))
    rows = await alarms_of(runtime, locker.locker_id, AlarmType.DOOR_LEFT_OPEN)
    assert [(a.compartment, a.count) for a in rows] == [("A01", 2), ("A02", 1)]
    assert rows[0].first_seen_at == first_seen and rows[0].last_seen_at == clock.now()
    await locker.send(locker.event(DoorClosed("A01", False, 700_000)))
    clock.advance(minutes=5)
    await locker.send(locker.event(DoorLeftOpen("A01", 300_000)))
    rows = await alarms_of(runtime, locker.locker_id, AlarmType.DOOR_LEFT_OPEN)
    assert [(a.compartment, a.state, a.count) for a in rows] == [
        ("A01", "cleared", 2), ("A02", "active", 1), ("A01", "active", 1),
    ]  # fmt: skip


async def test_a_redelivered_event_raises_nothing_twice(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    event = locker.event(Tamper("lid"))
    await locker.send(event)
    report = await locker.send(event)
    assert report.duplicates == 1
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.TAMPER)
    assert alarm.count == 1


async def test_a_sensor_alarm_clears_when_every_faulty_sensor_recovered(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    await locker.send(
        locker.event(SensorFault("B01", Sensor.DOOR)),
        locker.event(SensorFault("B01", Sensor.LOCK)),
        locker.event(SensorRecovered("B01", Sensor.DOOR)),
    )
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.SENSOR_FAULT)
    assert alarm.state == "active" and alarm.detail["sensors"] == ["lock"]
    await locker.send(locker.event(SensorRecovered("B01", Sensor.LOCK)))
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.SENSOR_FAULT)
    assert alarm.state == "cleared"


async def test_a_temperature_excursion_keeps_the_readings_as_evidence_for_the_parcel(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, clock: ManualClock
) -> None:
    started = await start_deposit(
        runtime,
        seeded,
        locker.locker_id,
        "SF7000000001",
        "13600000071",
        size=SizeClass.M,
        temperature=TemperatureClass.CHILLED,
        consent="in_person",
    )
    label = started.parcel.compartment
    assert label == "R01"
    await locker.send(
        locker.event(DoorOpened(label, DoorCause.COMMAND, started.command_id)),
        locker.event(DoorClosed(label, True, 3000)),
    )
    await locker.send(locker.event(TemperatureExcursion(label, 92, 20, 60)))
    for reading in (110, 85):
        clock.advance(minutes=1)
        await locker.send(telemetry(locker, temperatures=(TemperatureReading(label, reading),)))
    await locker.send(locker.event(TemperatureRestored(label, 55)))
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.TEMPERATURE_EXCURSION)
    assert alarm.parcel_id == started.parcel.id and alarm.state == "cleared"
    assert [(r["source"], r["deci_celsius"]) for r in alarm.detail["readings"]] == [
        ("excursion", 92), ("telemetry", 110), ("telemetry", 85), ("restored", 55),
    ]  # fmt: skip
    assert (alarm.detail["min_deci_celsius"], alarm.detail["max_deci_celsius"]) == (20, 60)


async def test_offline_beyond_the_grace_is_an_alarm_cleared_with_the_time_away(
    runtime: Runtime, locker: ScriptedLocker, clock: ManualClock
) -> None:
    await locker.send(locker.presence(PresenceState.OFFLINE))
    clock.advance(seconds=runtime.settings.offline_alarm_grace_s - 1)
    assert await runtime.services.health.watch_presence() == 0, "a short blip is no alarm"
    clock.advance(seconds=2)
    assert await runtime.services.health.watch_presence() == 1
    assert await runtime.services.health.watch_presence() == 0, "one alarm, not one per round"
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.LOCKER_OFFLINE)
    assert alarm.state == "active" and alarm.severity == "major"
    clock.advance(minutes=55)
    locker.connection += 1
    await locker.send(locker.presence(PresenceState.ONLINE))
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.LOCKER_OFFLINE)
    assert alarm.state == "cleared"
    assert alarm.detail["away_s"] == pytest.approx(
        runtime.settings.offline_alarm_grace_s + 1 + 3300
    )


async def test_clock_skew_from_telemetry_and_outdated_firmware_from_births(
    runtime: Runtime, locker: ScriptedLocker
) -> None:
    limit_ms = runtime.settings.clock_skew_alarm_s * 1000
    await locker.send(telemetry(locker, skew_ms=-(limit_ms + 60_000)))
    [skew] = await alarms_of(runtime, locker.locker_id, AlarmType.CLOCK_SKEW)
    assert skew.state == "active" and skew.detail["offset_s"] == pytest.approx(
        -(limit_ms + 60_000) / 1000
    )
    await locker.send(telemetry(locker, skew_ms=limit_ms - 1000))
    [skew] = await alarms_of(runtime, locker.locker_id, AlarmType.CLOCK_SKEW)
    assert skew.state == "cleared"

    runtime.settings.fleet_min_firmware = "1.2.0"
    locker.boot_id += 1
    locker.seq = 0
    await locker.send(locker.birth([]))
    [old] = await alarms_of(runtime, locker.locker_id, AlarmType.FIRMWARE_OUTDATED)
    assert old.state == "active" and old.detail == {"firmware": "1.0.0", "minimum": "1.2.0"}
    locker.boot_id += 1
    locker.seq = 0
    await locker.send(dataclasses.replace(locker.birth([]), firmware="1.2.1"))
    [old] = await alarms_of(runtime, locker.locker_id, AlarmType.FIRMWARE_OUTDATED)
    assert old.state == "cleared"


async def test_low_battery_from_telemetry_is_raised_once(
    runtime: Runtime, locker: ScriptedLocker, clock: ManualClock
) -> None:
    for battery in (18, 15, 12):
        clock.advance(seconds=30)
        await locker.send(telemetry(locker, power=PowerSource.BATTERY, battery=battery))
    [low] = await alarms_of(runtime, locker.locker_id, AlarmType.LOW_BATTERY)
    assert low.count == 1 and low.detail["battery_pct"] == 12 and low.last_seen_at == clock.now()
    await locker.send(telemetry(locker))
    assert [a.state for a in await alarms_of(runtime, locker.locker_id, AlarmType.LOW_BATTERY)] == [
        "cleared"
    ]
    assert to_ms(clock.now()) == locker.now_ms()


@pytest.mark.parametrize("result_first", [False, True])
async def test_a_commanded_opening_that_jams_is_one_jam(
    runtime: Runtime, seeded: Seeded, locker: ScriptedLocker, result_first: bool
) -> None:
    started = await start_deposit(
        runtime, seeded, locker.locker_id, "SF7000000002", "13600000072", consent="in_person"
    )
    label = started.parcel.compartment
    assert label is not None and started.command_id is not None
    event = locker.event(DoorJammed(label, started.command_id))
    jammed = locker.result(
        started.command_id,
        ResultStatus.FAILED,
        action=Action.OPEN_COMPARTMENT,
        outcome=Outcome.DOOR_JAMMED,
    )
    for message in (jammed, event) if result_first else (event, jammed):
        await locker.send(message)
    [alarm] = await alarms_of(runtime, locker.locker_id, AlarmType.DOOR_JAMMED)
    assert (alarm.compartment, alarm.count, alarm.parcel_id) == (label, 1, started.parcel.id)
    assert alarm.detail["command_id"] == started.command_id

"""Every fault, on a locker on a manual clock: what it does and what the controller gets to see.

Each test injects one fault through the :class:`FaultInjector` (as a fleet does), lets time run,
and checks the events a controller needs to notice the fault and its end, and the state the
locker is left in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from firmware_sim.agenda import Agenda
from firmware_sim.clock import ManualClock
from firmware_sim.door import DoorPhase
from firmware_sim.faults import Fault, FaultInjector, FaultKind, FaultPlan, FaultRule
from firmware_sim.files import load_faults
from firmware_sim.locker import Locker
from firmware_sim.settings import Settings
from firmware_sim.simulation import Simulation
from firmware_sim.spec import LockerSpec, generated_spec
from protocol.messages import (
    Birth,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorOpened,
    Event,
    EventData,
    OccupancyChanged,
    OpenCompartment,
    OpenPurpose,
    PowerChanged,
    PowerSource,
    Sensor,
    SensorFault,
    SensorRecovered,
    Telemetry,
    TemperatureExcursion,
    TemperatureRestored,
)
from tests.firmware_sim.support import SEED, Desk, Signer

MINUTE = 60_000


@pytest.fixture
def agenda(sim: Simulation) -> Agenda:
    return sim.agenda


@pytest.fixture
def injector(locker: Locker, agenda: Agenda, clock: ManualClock) -> FaultInjector:
    return FaultInjector(FaultPlan(), agenda, clock, {locker.locker_id: locker})


@pytest.fixture
def desk(sim: Simulation, locker: Locker, signer: Signer) -> Desk:
    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()
    return desk


def kinds(events: list[EventData]) -> list[str]:
    return [type(e).__name__ for e in events]


def follow_link(sim: Simulation, locker: Locker) -> None:
    """Do what a transport does after each step: connect when the board wants its link."""
    if locker.link_wanted and not locker.is_connected:
        locker.connected()


def test_network_drop_cuts_the_link_buffers_and_replays(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    assert injector.inject(locker.locker_id, Fault(FaultKind.NETWORK_DROP, duration_ms=MINUTE))
    assert not locker.link_wanted and not locker.is_connected
    locker.open_door("A01")  # meanwhile someone forces a door
    sim.run_for(MINUTE)
    follow_link(sim, locker)
    # Afterwards: connected again; the forced door arrives after the new presence and birth.
    messages = desk.take()
    assert [type(m).__name__ for m in messages[:2]] == ["Presence", "Birth"]
    assert DoorForced("A01") in [getattr(m, "data", None) for m in messages]


def test_broker_outage_without_a_transport_hook_drops_every_locker(
    spec: LockerSpec, clock: ManualClock
) -> None:
    others = [generated_spec(f"XZ-{n:04d}", SEED) for n in (2, 3)]
    lockers = {s.locker_id: Locker(s, clock) for s in [spec, *others]}
    sim = Simulation(lockers.values(), clock)
    plan = FaultPlan((FaultRule(Fault(FaultKind.BROKER_OUTAGE, duration_ms=MINUTE), at_ms=0),))
    FaultInjector(plan, sim.agenda, clock, lockers).start()
    sim.run_for(1)
    assert not any(lk.link_wanted for lk in lockers.values())
    sim.run_for(MINUTE)
    assert all(lk.link_wanted for lk in lockers.values())


def test_door_jam_shows_on_the_next_release_and_ends_with_the_technician(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    fault = Fault(FaultKind.DOOR_JAM, duration_ms=10 * MINUTE, compartment="B04")
    injector.inject(locker.locker_id, fault)
    command = desk.command(OpenCompartment("B04", OpenPurpose.DEPOSIT))
    sim.run_for(MINUTE)
    assert desk.events() == [DoorJammed("B04", command.command_id)]
    view = locker.view().compartments["B04"]
    assert (view.phase, view.in_service) == (DoorPhase.LOCKED, False)
    sim.run_for(10 * MINUTE)
    # Afterwards: the technician opened and shut it with the service key: back in service.
    opened, closed = desk.events()
    assert opened == DoorOpened("B04", DoorCause.SERVICE)
    assert isinstance(closed, DoorClosed)
    assert locker.view().compartments["B04"].in_service


def test_stuck_door_sensor_reports_fault_hides_changes_and_reconciles_on_recovery(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    fault = Fault(FaultKind.STUCK_SENSOR, duration_ms=MINUTE, compartment="A02")
    injector.inject(locker.locker_id, fault)
    assert desk.events() == [SensorFault("A02", Sensor.DOOR, "door sensor stuck at closed")]
    assert not locker.view().compartments["A02"].in_service
    locker.open_door("A02")  # forced while nobody can see it
    sim.run_for(MINUTE)
    # Afterwards: the recovered sensor shows the door open, which was forced.
    assert desk.events() == [SensorRecovered("A02", Sensor.DOOR), DoorForced("A02")]
    assert locker.view().compartments["A02"].phase is DoorPhase.OPEN


def test_stuck_occupancy_sensor_reports_fault_and_the_change_on_recovery(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    fault = Fault(
        FaultKind.STUCK_SENSOR, duration_ms=MINUTE, compartment="A03", sensor=Sensor.OCCUPANCY
    )
    injector.inject(locker.locker_id, fault)
    locker.open_door("A03")
    locker.put_item("A03")
    locker.close_door("A03")
    closed = desk.events()
    assert kinds(closed) == ["SensorFault", "DoorForced", "DoorClosed"]
    assert closed[-1] == DoorClosed("A03", occupied=False, open_for_ms=0)  # stuck at "empty"
    sim.run_for(MINUTE)
    assert desk.events() == [
        SensorRecovered("A03", Sensor.OCCUPANCY),
        OccupancyChanged("A03", True),
    ]


def test_power_loss_on_battery_warns_then_shuts_down_and_boots_anew(
    spec: LockerSpec, clock: ManualClock, signer: Signer
) -> None:
    small = dataclasses.replace(spec, battery_backup_s=600)  # ten minutes of battery
    locker = Locker(small, clock, settings=Settings(heartbeat_s=30))
    sim = Simulation([locker], clock)
    injector = FaultInjector(FaultPlan(), sim.agenda, clock, {locker.locker_id: locker})
    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()
    injector.inject(locker.locker_id, Fault(FaultKind.POWER_LOSS, duration_ms=30 * MINUTE))
    sim.run_for(11 * MINUTE)
    assert desk.events() == [
        PowerChanged(PowerSource.BATTERY, 100),
        PowerChanged(PowerSource.BATTERY, 20),
        PowerChanged(PowerSource.BATTERY, 10),
    ]
    assert not locker.powered and not locker.link_wanted
    sim.run_for(20 * MINUTE)
    follow_link(sim, locker)
    # Afterwards: a new boot with a new birth; nothing of the old boot is lost.
    births = [m for m in desk.take() if isinstance(m, Birth)]
    assert locker.boot_id == 2 and [b.boot_id for b in births] == [2]


def test_power_loss_that_the_battery_carries_ends_with_mains_again(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    injector.inject(locker.locker_id, Fault(FaultKind.POWER_LOSS, duration_ms=10 * MINUTE))
    sim.run_for(10 * MINUTE)
    events = desk.events()
    assert events[0] == PowerChanged(PowerSource.BATTERY, 100)
    assert isinstance(events[-1], PowerChanged) and events[-1].source is PowerSource.MAINS
    assert locker.boot_id == 1 and locker.powered


def test_power_loss_without_battery_is_an_immediate_reboot(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    injector.inject(
        locker.locker_id, Fault(FaultKind.POWER_LOSS, duration_ms=MINUTE, battery=False)
    )
    assert not locker.powered and locker.take_outgoing() == []
    sim.run_for(MINUTE)
    follow_link(sim, locker)
    assert locker.boot_id == 2 and any(isinstance(m, Birth) for m in desk.take())


def test_reboot_fault_restarts_with_a_new_boot_id(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    injector.inject(locker.locker_id, Fault(FaultKind.REBOOT))
    follow_link(sim, locker)
    messages = desk.take()
    assert [(type(m).__name__, getattr(m, "boot_id", 0)) for m in messages[:2]] == [
        ("Presence", 2),
        ("Birth", 2),
    ]


def test_clock_skew_shows_in_every_timestamp_until_the_clock_is_resynced(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector, clock: ManualClock
) -> None:
    skew = 7 * MINUTE
    injector.inject(
        locker.locker_id, Fault(FaultKind.CLOCK_SKEW, duration_ms=10 * MINUTE, skew_ms=skew)
    )
    start = clock.now_ms()
    sim.run_for(2 * MINUTE)
    stamps = [m.ts for m in desk.take() if isinstance(m, Telemetry)]
    assert len(stamps) >= 4
    assert all(start + skew <= ts <= clock.now_ms() + skew for ts in stamps)
    sim.run_for(10 * MINUTE)
    desk.take()
    start = clock.now_ms()
    sim.run_for(MINUTE)
    # Afterwards: resynchronised, the locker's time is true time again.
    stamps = [m.ts for m in desk.take() if isinstance(m, Telemetry)]
    assert stamps and all(start <= ts <= clock.now_ms() for ts in stamps)


def test_temperature_excursion_and_restoration_are_reported(
    locker: Locker, sim: Simulation, desk: Desk, injector: FaultInjector
) -> None:
    fault = Fault(
        FaultKind.TEMPERATURE_EXCURSION,
        duration_ms=20 * MINUTE,
        compartment="C06",
        rise_deci_c_per_min=10,
    )
    injector.inject(locker.locker_id, fault)
    sim.run_for(20 * MINUTE)
    (excursion,) = desk.events()
    assert isinstance(excursion, TemperatureExcursion) and excursion.compartment == "C06"
    assert excursion.deci_celsius > excursion.max_deci_celsius == 60
    sim.run_for(60 * MINUTE)
    messages = desk.take()
    (restored,) = [m.data for m in messages if isinstance(m, Event)]
    assert isinstance(restored, TemperatureRestored)
    assert 20 <= restored.deci_celsius <= 60
    # Afterwards: telemetry carries every chilled compartment's temperature, all in range.
    readings = [m for m in messages if isinstance(m, Telemetry)][-1].temperatures
    assert {r.compartment for r in readings} == {"C05", "C06", "C07", "C08"}
    assert all(20 <= r.deci_celsius <= 60 for r in readings)


def test_faults_that_cannot_apply_are_counted_not_raised(
    locker: Locker, injector: FaultInjector
) -> None:
    assert not injector.inject(locker.locker_id, Fault(FaultKind.SERIAL_CORRUPTION))
    assert not injector.inject("XZ-9999", Fault(FaultKind.REBOOT))
    ambient = Fault(FaultKind.TEMPERATURE_EXCURSION, compartment="A01")
    with pytest.raises(ValueError, match="not chilled"):
        injector.inject(locker.locker_id, ambient)
    assert injector.not_applicable == {"serial_corruption": 1, "reboot": 1}


def test_random_faults_are_reproducible_from_the_seed(spec: LockerSpec) -> None:
    def run(seed: int) -> list[tuple[int, str]]:
        clock = ManualClock()
        lockers = {
            s.locker_id: Locker(s, clock)
            for s in [spec, *(generated_spec(f"XZ-{n:04d}", SEED) for n in range(2, 6))]
        }
        sim = Simulation(lockers.values(), clock)
        rules = tuple(
            FaultRule(Fault(kind, duration_ms=MINUTE), per_hour=0.5)
            for kind in (FaultKind.NETWORK_DROP, FaultKind.STUCK_SENSOR, FaultKind.REBOOT)
        )
        injector = FaultInjector(FaultPlan(rules, seed), sim.agenda, clock, lockers)
        injector.start()
        seen: list[tuple[int, str]] = []
        for _ in range(24):
            sim.run_for(3_600_000)
            seen.append((clock.now_ms(), repr(sorted(injector.injected.items()))))
        return seen

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_a_fault_file_is_read_into_rules_and_mistakes_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(
        "seed = 5\n"
        '[[fault]]\nkind = "network_drop"\nat_s = 30\nduration_s = 60\nlockers = ["A-1"]\n'
        '[[fault]]\nkind = "stuck_sensor"\nper_hour = 0.25\nsensor = "occupancy"\n'
        '[[fault]]\nkind = "broker_outage"\nat_s = 120\nduration_s = 15\n'
    )
    plan = load_faults(path)
    assert plan.seed == 5 and len(plan.rules) == 3
    drop, stuck, outage = plan.rules
    assert (drop.at_ms, drop.fault.duration_ms, drop.lockers) == (30_000, 60_000, ("A-1",))
    assert (stuck.per_hour, stuck.fault.sensor) == (0.25, Sensor.OCCUPANCY)
    assert outage.fault.kind is FaultKind.BROKER_OUTAGE
    path.write_text('[[fault]]\nkind = "earthquake"\nat_s = 1\n')
    with pytest.raises(ValueError, match=r"fault 1: kind must be one of"):
        load_faults(path)
    path.write_text('[[fault]]\nkind = "reboot"\n')
    with pytest.raises(ValueError, match=r"either a time \(at\) or a rate"):
        load_faults(path)

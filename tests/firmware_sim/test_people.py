"""Simulated people: the attendant who completes remote opens, and recipients at the keypad."""

from __future__ import annotations

import pytest

from firmware_sim.clock import ManualClock
from firmware_sim.door import DoorPhase
from firmware_sim.locker import Locker
from firmware_sim.people import AttendantPolicy, Delays, People
from firmware_sim.simulation import Simulation
from firmware_sim.spec import LockerSpec
from protocol.codes import code_hash, full_sync_pages
from protocol.messages import (
    CodeEntry,
    DoorClosed,
    DoorLeftOpen,
    OpenCompartment,
    OpenPurpose,
    Pickup,
)
from tests.firmware_sim.support import Desk, Signer


@pytest.fixture
def people(sim: Simulation, clock: ManualClock) -> People:
    return People(sim.agenda, clock, seed=3)


@pytest.fixture
def desk(sim: Simulation, locker: Locker, signer: Signer) -> Desk:
    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()
    return desk


def closes(desk: Desk) -> list[DoorClosed]:
    return [e for e in desk.events() if isinstance(e, DoorClosed)]


@pytest.mark.parametrize("purpose", [OpenPurpose.DEPOSIT, OpenPurpose.DROPOFF])
def test_the_attendant_completes_a_deposit_with_a_parcel_inside(
    locker: Locker, sim: Simulation, desk: Desk, people: People, purpose: OpenPurpose
) -> None:
    people.attend(locker, AttendantPolicy())
    desk.command(OpenCompartment("B05", purpose))
    sim.run_for(60_000)
    # Afterwards: shut, locked and holding a parcel, as the controller was told.
    assert [(c.compartment, c.occupied) for c in closes(desk)] == [("B05", True)]
    view = locker.view().compartments["B05"]
    assert (view.phase, view.door_open, view.occupied) == (DoorPhase.LOCKED, False, True)


@pytest.mark.parametrize(
    "purpose",
    [
        OpenPurpose.PICKUP,
        OpenPurpose.AGENT_PICKUP,
        OpenPurpose.RETURN_TO_CARRIER,
        OpenPurpose.COLLECTION,
    ],
)
def test_the_attendant_takes_the_parcel_out_for_every_kind_of_collection(
    locker: Locker, sim: Simulation, desk: Desk, people: People, purpose: OpenPurpose
) -> None:
    locker.open_door("B06")
    locker.put_item("B06")
    locker.close_door("B06")
    desk.take()
    people.attend(locker, AttendantPolicy(delays=Delays.fast()))
    desk.command(OpenCompartment("B06", purpose))
    sim.run_for(5_000)
    assert [(c.compartment, c.occupied) for c in closes(desk)] == [("B06", False)]
    assert not locker.view().compartments["B06"].occupied


def test_an_attendant_who_does_not_show_leaves_the_door_ajar_and_alarming(
    locker: Locker, sim: Simulation, desk: Desk, people: People
) -> None:
    people.attend(locker, AttendantPolicy(no_show=1.0))
    desk.command(OpenCompartment("A04", OpenPurpose.DEPOSIT))
    sim.run_for(locker.settings.door_open_alarm_s * 1000 + 1_000)
    assert [type(e).__name__ for e in desk.events()] == ["DoorOpened", "DoorLeftOpen"]
    # Afterwards: the spring opened it and nobody shut it; nothing was put in.
    view = locker.view().compartments["A04"]
    assert (view.phase, view.occupied) == (DoorPhase.OPEN, False)
    assert people.counts["attendant_no_shows"] == 1


def test_an_attendant_who_walks_away_causes_door_left_open_alarms(
    locker: Locker, sim: Simulation, desk: Desk, people: People
) -> None:
    people.attend(locker, AttendantPolicy(leave_open=1.0))
    desk.command(OpenCompartment("A04", OpenPurpose.DEPOSIT))
    sim.run_for(locker.settings.door_open_alarm_s * 1000 + 30_000)
    assert any(isinstance(e, DoorLeftOpen) for e in desk.events())
    assert locker.view().compartments["A04"].door_open


def test_the_attendant_ignores_keypad_releases_and_forced_doors(
    locker: Locker, sim: Simulation, desk: Desk, people: People
) -> None:
    people.attend(locker, AttendantPolicy())
    locker.open_door("A06")
    sim.run_for(60_000)
    assert locker.view().compartments["A06"].door_open  # nobody came to close it
    assert people.counts["attendant_visits"] == 0


def test_a_recipient_with_the_right_code_takes_the_parcel_and_closes_the_door(
    locker: Locker,
    sim: Simulation,
    desk: Desk,
    people: People,
    signer: Signer,
    clock: ManualClock,
) -> None:
    key = signer.code_key(locker.locker_id)
    entry = CodeEntry(
        code_hash(key, locker.locker_id, "246810"), "C02", "P-77", clock.now_ms() + 86_400_000
    )
    desk.command(full_sync_pages([entry], to_version=1)[0])
    locker.open_door("C02")
    locker.put_item("C02")
    locker.close_door("C02")
    desk.take()
    people.recipient_picks_up(locker, "111111")  # a wrong code first: nothing opens
    sim.run_for(30_000)
    people.recipient_picks_up(locker, "246810")
    sim.run_for(60_000)
    events = desk.events()
    assert [type(e).__name__ for e in events] == [
        "CodeRejected",
        "Pickup",
        "DoorOpened",
        "DoorClosed",
    ]
    assert isinstance(events[1], Pickup) and events[1].parcel_ref == "P-77"
    # Afterwards: the parcel is gone, the door shut and locked.
    view = locker.view().compartments["C02"]
    assert (view.occupied, view.door_open, view.phase) == (False, False, DoorPhase.LOCKED)
    assert people.counts["codes_refused"] == 1 and people.agenda.failures == []


def test_people_are_reproducible_from_their_seed(spec: LockerSpec) -> None:
    def run(seed: int) -> list[int]:
        local = ManualClock()
        locker = Locker(spec, local)
        sim = Simulation([locker], local)
        People(sim.agenda, local, seed).attend(locker)
        locker.connected()
        desk = Desk(sim, locker, Signer(now=local.now_ms))
        desk.take()
        desk.command(OpenCompartment("A01", OpenPurpose.DEPOSIT))
        sim.run_for(60_000)
        return [e.open_for_ms for e in desk.events() if isinstance(e, DoorClosed)]

    assert run(1) == run(1)
    assert run(1) != run(2)

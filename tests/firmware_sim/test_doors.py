"""The door machine: the table itself, and what a locker reports as doors are used and abused.

Every test drives one locker on a manual clock and says what must hold afterwards, both in what
the firmware reported and in the physical state (door, parcel, lock).
"""

from __future__ import annotations

import itertools

import pytest

from firmware_sim.cabinet import PhysicalActionError
from firmware_sim.door import (
    DOOR_TABLE,
    LOCK_ACTUATION_MS,
    DoorInput,
    DoorPhase,
    IllegalDoorTransition,
    door_step,
)
from firmware_sim.locker import Locker
from firmware_sim.simulation import Simulation
from protocol.messages import (
    CommandResult,
    DoorCause,
    DoorClosed,
    DoorForced,
    DoorJammed,
    DoorLeftOpen,
    DoorOpened,
    Event,
    OpenCompartment,
    OpenPurpose,
    Outcome,
    RefusalReason,
    ResultStatus,
)
from tests.firmware_sim.support import Desk, Signer


@pytest.fixture
def desk(sim: Simulation, locker: Locker, signer: Signer) -> Desk:
    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()  # presence and birth
    return desk


def open_args(compartment: str) -> OpenCompartment:
    return OpenCompartment(compartment, OpenPurpose.DEPOSIT)


# --- the table --------------------------------------------------------------------------------


def test_every_pair_outside_the_table_is_an_illegal_transition_naming_phase_and_input() -> None:
    for phase, given in itertools.product(DoorPhase, DoorInput):
        if (phase, given) in DOOR_TABLE:
            assert door_step("A01", phase, given) is DOOR_TABLE[(phase, given)]
        else:
            with pytest.raises(IllegalDoorTransition) as caught:
                door_step("A01", phase, given)
            assert caught.value.phase is phase and caught.value.input is given
            assert "A01" in str(caught.value) and str(phase) in str(caught.value)


def test_every_phase_can_be_left_and_locked_is_reachable_from_each() -> None:
    # No phase is a trap: from each one some path of inputs leads back to LOCKED.
    reach = {DoorPhase.LOCKED}
    changed = True
    while changed:
        changed = False
        for (phase, _given), transition in DOOR_TABLE.items():
            if transition.target in reach and phase not in reach:
                reach.add(phase)
                changed = True
    assert reach == set(DoorPhase)


# --- a locker's doors -------------------------------------------------------------------------


def test_a_signed_open_pops_the_door_and_reports_it_opened_then_the_deposit_is_closed(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    command = desk.command(open_args("A03"))
    assert locker.view().compartments["A03"].phase is DoorPhase.RELEASED
    sim.run_for(LOCK_ACTUATION_MS)
    messages = desk.take()
    # The spring pushed the door ajar: door_opened first, then the command's result.
    assert [type(m).__name__ for m in messages] == ["Event", "CommandResult"]
    opened, result = messages
    assert isinstance(opened, Event) and isinstance(result, CommandResult)
    assert opened.data == DoorOpened("A03", DoorCause.COMMAND, command.command_id)
    assert (result.command_id, result.status, result.outcome, result.compartment) == (
        command.command_id,
        ResultStatus.OK,
        Outcome.OPENED,
        "A03",
    )
    locker.put_item("A03")
    sim.run_for(4_000)
    locker.close_door("A03")
    assert desk.events() == [DoorClosed("A03", occupied=True, open_for_ms=4_000)]
    # Afterwards: relocked, physically shut with the parcel inside, still in service.
    view = locker.view().compartments["A03"]
    assert (view.phase, view.door_open, view.occupied, view.in_service) == (
        DoorPhase.LOCKED,
        False,
        True,
        True,
    )


def test_a_released_door_nobody_comes_to_stands_open_and_is_an_alarm_not_a_jam(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(open_args("B01"))
    sim.run_for(locker.settings.lock_release_s * 1000 + locker.settings.door_open_alarm_s * 1000)
    events = desk.events()
    assert [type(e).__name__ for e in events] == ["DoorOpened", "DoorLeftOpen"]
    # Afterwards: the door stands open, the compartment is still in service.
    view = locker.view().compartments["B01"]
    assert view.door_open and view.in_service and view.phase is DoorPhase.OPEN


def test_a_stuck_door_is_reported_as_a_jam_never_as_opened_and_leaves_service(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    locker.jam_door("A05")
    command = desk.command(open_args("A05"))
    sim.run_for(locker.settings.lock_release_s * 1000 - 1)
    assert desk.take() == []  # waiting for the door, which does not move
    sim.run_for(1)
    jam, result = desk.take()
    assert isinstance(jam, Event) and jam.data == DoorJammed("A05", command.command_id)
    assert isinstance(result, CommandResult)
    assert (result.status, result.outcome) == (ResultStatus.FAILED, Outcome.DOOR_JAMMED)
    # Afterwards: relocked and out of service; a further open is refused without a release.
    view = locker.view().compartments["A05"]
    assert (view.phase, view.in_service, view.door_open) == (DoorPhase.LOCKED, False, False)
    desk.command(open_args("A05"))
    (refusal,) = desk.results()
    assert refusal.reason is RefusalReason.OUT_OF_SERVICE
    # A technician frees it and opens and shuts it with the service key: back in service.
    locker.clear_jam("A05")
    sim.run_for(LOCK_ACTUATION_MS)
    locker.close_door("A05")
    opened, closed = desk.events()
    assert opened == DoorOpened("A05", DoorCause.SERVICE)
    assert isinstance(closed, DoorClosed)
    assert locker.view().compartments["A05"].in_service


def test_a_jammed_door_that_opens_later_after_all_was_forced(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    locker.jam_door("B03")
    desk.command(open_args("B03"))
    sim.run_for(locker.settings.lock_release_s * 1000)
    desk.take()
    locker.jam_door("B03", stuck=False)
    locker.open_door("B03")  # someone pulls hard: the latch is engaged again
    assert desk.events() == [DoorForced("B03")]
    assert not locker.view().compartments["B03"].in_service


def test_a_door_opened_while_locked_was_forced(locker: Locker, sim: Simulation, desk: Desk) -> None:
    locker.open_door("C01")
    sim.run_for(1_000)
    locker.close_door("C01")
    forced, closed = desk.events()
    assert forced == DoorForced("C01")
    assert isinstance(closed, DoorClosed) and closed.open_for_ms == 1_000
    # Afterwards: the compartment is locked again and still usable.
    assert locker.view().compartments["C01"].phase is DoorPhase.LOCKED


def test_a_door_left_open_raises_an_alarm_every_door_open_alarm_s(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(open_args("B02"))
    sim.run_for(LOCK_ACTUATION_MS)
    desk.take()
    alarm_ms = locker.settings.door_open_alarm_s * 1000
    sim.run_for(3 * alarm_ms + 1)
    alarms = [e for e in desk.events() if isinstance(e, DoorLeftOpen)]
    assert alarms == [DoorLeftOpen("B02", n * alarm_ms) for n in (1, 2, 3)]
    # Afterwards: closing it ends the alarms.
    locker.close_door("B02")
    sim.run_for(2 * alarm_ms)
    assert not [e for e in desk.events() if isinstance(e, DoorLeftOpen)]


def test_a_released_door_is_busy_and_an_open_one_already_open(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(open_args("A01"))
    desk.command(open_args("A01"))  # while the lock is released and the door not yet open
    sim.run_for(LOCK_ACTUATION_MS)
    desk.command(open_args("A01"))
    outcomes = [(r.status, r.outcome or r.reason) for r in desk.results()]
    assert outcomes == [
        (ResultStatus.REFUSED, RefusalReason.BUSY),
        (ResultStatus.OK, Outcome.OPENED),
        (ResultStatus.OK, Outcome.ALREADY_OPEN),
    ]


def test_more_than_twenty_remote_opens_a_minute_are_busy(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    labels = [c.id for c in locker.spec.compartments][:21]
    for label in labels:
        desk.command(open_args(label))
    sim.run_for(5_000)  # 41 messages leave at the paced 20 per second
    results = desk.results()
    refused = [r.compartment for r in results if r.reason is RefusalReason.BUSY]
    assert refused == [labels[20]] and len(locker.view().released) == 20
    sim.run_for(60_000)
    desk.command(open_args(labels[20]))
    sim.run_for(LOCK_ACTUATION_MS)
    assert [r.outcome for r in desk.results()] == [Outcome.OPENED]


def test_an_unknown_compartment_is_refused_and_no_door_moves(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    desk.command(open_args("Z99"))
    sim.run_for(1_000)
    (refusal,) = desk.results()
    assert refusal.reason is RefusalReason.UNKNOWN_COMPARTMENT
    assert locker.view().released == []


def test_people_cannot_do_the_impossible(locker: Locker) -> None:
    with pytest.raises(PhysicalActionError, match="shut"):
        locker.put_item("A01")
    with pytest.raises(PhysicalActionError, match="no compartment"):
        locker.open_door("Q01")
    locker.jam_door("A02")
    with pytest.raises(PhysicalActionError, match="stuck"):
        locker.open_door("A02")
    locker.open_door("A01")
    locker.open_door("A01")  # pulling an open door does nothing
    with pytest.raises(PhysicalActionError, match="empty"):
        locker.take_item("A01")
    locker.put_item("A01")
    with pytest.raises(PhysicalActionError, match="already holds"):
        locker.put_item("A01")

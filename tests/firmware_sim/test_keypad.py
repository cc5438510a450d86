"""The keypad: pickups by code from the local cache (online and offline), and the lockout."""

from __future__ import annotations

import pytest

from firmware_sim.clock import ManualClock
from firmware_sim.door import DoorPhase
from firmware_sim.locker import Locker
from firmware_sim.simulation import Simulation
from protocol.codes import code_hash, full_sync_pages
from protocol.messages import CodeEntry, CodeRejected, DoorCause, DoorOpened, Pickup
from tests.firmware_sim.support import Desk, Signer

CODE = "314159"


@pytest.fixture
def desk(sim: Simulation, locker: Locker, signer: Signer, clock: ManualClock) -> Desk:
    """A connected locker whose cache holds CODE for a parcel in B03 (for one day)."""
    locker.connected()
    desk = Desk(sim, locker, signer)
    hashed = code_hash(signer.code_key(locker.locker_id), locker.locker_id, CODE)
    entry = CodeEntry(hashed, "B03", "PARCEL-1", clock.now_ms() + 86_400_000)
    desk.command(full_sync_pages([entry], to_version=1)[0])
    locker.open_door("B03")
    locker.put_item("B03")
    locker.close_door("B03")
    desk.take()
    return desk


def hashed(locker: Locker, signer: Signer, code: str = CODE) -> str:
    return code_hash(signer.code_key(locker.locker_id), locker.locker_id, code)


def test_a_right_code_releases_its_compartment_once_and_is_reported_online(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    locker.keypad_enter(CODE)
    assert locker.screen.startswith("请取件 B03")
    sim.run_for(600)
    locker.open_door("B03")
    locker.take_item("B03")
    locker.close_door("B03")
    events = desk.events()
    assert events[0] == Pickup("B03", hashed(locker, signer), "PARCEL-1", offline=False)
    assert events[1] == DoorOpened("B03", DoorCause.KEYPAD, code_hash=hashed(locker, signer))
    # Afterwards: the code is used up; typing it again is a wrong code.
    assert locker.view().codes_cached == 0
    locker.keypad_enter(CODE)
    assert desk.events() == [CodeRejected(1)]
    assert locker.view().compartments["B03"].phase is DoorPhase.LOCKED


def test_a_pickup_while_offline_works_and_is_reported_when_the_link_returns(
    locker: Locker, sim: Simulation, desk: Desk, signer: Signer
) -> None:
    locker.disconnected()
    locker.keypad_enter(CODE)
    sim.run_for(600)
    locker.open_door("B03")
    locker.take_item("B03")
    locker.close_door("B03")
    sim.run_for(3_600_000)  # an hour offline
    assert desk.events() == []
    locker.connected()
    events = desk.events()
    assert events[0] == Pickup("B03", hashed(locker, signer), "PARCEL-1", offline=True)
    assert [type(e).__name__ for e in events[1:]] == ["DoorOpened", "DoorClosed"]
    # Afterwards: the compartment is empty and locked, everything acknowledged.
    view = locker.view()
    assert not view.compartments["B03"].occupied and view.pending_events == 0


def test_an_expired_code_matches_nothing(
    locker: Locker, sim: Simulation, desk: Desk, clock: ManualClock
) -> None:
    sim.run_for(86_400_001)
    desk.take()
    locker.keypad_enter(CODE)
    assert desk.events() == [CodeRejected(1)]
    assert locker.view().released == []


def test_wrong_codes_lock_the_keypad_for_longer_each_time(
    locker: Locker, sim: Simulation, desk: Desk
) -> None:
    settings = locker.settings
    tries, lockout_ms = settings.keypad_max_attempts, settings.keypad_lockout_s * 1000
    for _ in range(tries - 2):
        locker.keypad_enter("000000")
    locker.keypad_enter("12ab")  # not even six digits: just as wrong
    assert locker.screen.endswith("1 tries left")
    locker.keypad_enter("000001")
    assert f"wait {lockout_ms // 1000} s" in locker.screen
    rejected = desk.events()
    assert rejected[-1] == CodeRejected(tries, locked_out_ms=lockout_ms)
    # While locked out, even the right code is ignored, and nothing is reported.
    locker.keypad_enter(CODE)
    assert desk.events() == [] and "wait" in locker.screen
    sim.run_for(lockout_ms)
    for _ in range(tries):
        locker.keypad_enter("999999")
    assert desk.events()[-1] == CodeRejected(2 * tries, locked_out_ms=2 * lockout_ms)
    sim.run_for(2 * lockout_ms)
    # Afterwards: the right code still works, and resets the count.
    locker.keypad_enter(CODE)
    assert isinstance(desk.events()[0], Pickup)
    locker.keypad_enter("000000")
    assert desk.events()[-1] == CodeRejected(1)


def test_the_screen_returns_to_the_prompt(locker: Locker, sim: Simulation, desk: Desk) -> None:
    locker.keypad_enter("000000")
    assert "Code wrong" in locker.screen
    sim.run_for(30_000)
    assert "Enter pickup code" in locker.screen

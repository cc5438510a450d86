"""The event buffer: bounded with counted overflow, removed only by signed acks, resent, replayed
in order after reconnects and reboots, kept in non-volatile memory (also in a JSON file).

The invariant checked throughout: for every boot, each sequence number the locker took reaches
the receiver exactly once after de-duplication, or is named by an ``events_dropped`` report.
"""

from __future__ import annotations

from pathlib import Path

from firmware_sim.clock import ManualClock
from firmware_sim.locker import Locker
from firmware_sim.outbox import OutboxLimits
from firmware_sim.settings import Settings
from firmware_sim.simulation import Simulation
from firmware_sim.spec import LockerSpec
from firmware_sim.store import JsonFileStore, MemoryStore
from protocol.codec import encode
from protocol.messages import Birth, CommandResult, DeviceMessage, Event, EventsDropped
from protocol.topics import Channel
from tests.firmware_sim.support import Desk, Signer


def slam_doors(locker: Locker, times: int) -> None:
    """Someone forces a door open and shut ``times`` times: two events each."""
    for _ in range(times):
        locker.open_door("A01")
        locker.close_door("A01")


def sequenced(messages: list[DeviceMessage]) -> list[tuple[int, int]]:
    return [(m.boot_id, m.seq) for m in messages if isinstance(m, Birth | Event | CommandResult)]


def test_overflow_discards_the_oldest_and_reports_them_so_every_number_is_accounted_for(
    spec: LockerSpec, clock: ManualClock, signer: Signer
) -> None:
    locker = Locker(spec, clock, limits=OutboxLimits(capacity=20))
    sim = Simulation([locker], clock)
    slam_doors(locker, 15)  # 30 events while offline: the 10 oldest make way
    assert locker.view().pending_events == 20
    assert locker.view().events_dropped_total == 10
    locker.connected()  # the birth (seq 31) pushes out one more (seq 11)
    desk = Desk(sim, locker, signer)
    got = desk.take()
    sim.run_for(5_000)
    got += desk.take()
    reports = [m.data for m in got if isinstance(m, Event) and isinstance(m.data, EventsDropped)]
    assert reports == [EventsDropped(count=11, first_seq=1, last_seq=11)]
    delivered = {seq for _, seq in sequenced(got)}
    # Afterwards: 1-11 are reported lost, 12-31 arrived, 32 is the report: no silent gap.
    assert delivered == set(range(12, 33))
    assert locker.view().pending_events == 0


def test_an_overflow_an_earlier_boot_could_not_report_is_still_counted(
    spec: LockerSpec, clock: ManualClock, signer: Signer
) -> None:
    locker = Locker(spec, clock, limits=OutboxLimits(capacity=10))
    sim = Simulation([locker], clock)
    slam_doors(locker, 7)  # 14 events: 1-4 discarded, unreported (no link)
    locker.reboot()
    locker.connected()  # boot 2's birth needs room: boot 1's oldest (5) goes too
    desk = Desk(sim, locker, signer)
    got = desk.take()
    sim.run_for(5_000)
    got += desk.take()
    # Boot 1's losses cannot be reported in boot 2's numbering: telemetry's total says them.
    assert not [m for m in got if isinstance(m, Event) and isinstance(m.data, EventsDropped)]
    assert sorted(sequenced(got)) == [(1, n) for n in range(6, 15)] + [(2, 1)]
    assert locker.view().events_dropped_total == 5


def test_only_a_signed_ack_for_this_locker_removes_anything(
    locker: Locker, sim: Simulation, signer: Signer
) -> None:
    slam_doors(locker, 2)
    locker.connected()
    quiet = Desk(sim, locker, signer, acknowledge=False)
    quiet.take()
    boot = locker.boot_id
    forged = Signer(seed=1).ack(locker.locker_id, boot, [1, 2, 3, 4, 5])
    foreign = signer.ack("XZ-0002", boot, [1, 2, 3, 4, 5])
    unsigned = encode(signer.ack(locker.locker_id, boot, [1, 2]))[:-80] + b"}"
    for payload in (encode(forged), encode(foreign), unsigned, b"{}"):
        locker.receive(Channel.ACK, payload)
    assert locker.view().pending_events == 5
    locker.receive(Channel.ACK, encode(signer.ack(locker.locker_id, boot, [1, 2, 5])))
    # Afterwards: exactly the three acknowledged numbers are gone.
    assert locker.view().pending_events == 2
    assert locker.uplink.acks_rejected == 4


def test_unacknowledged_messages_are_resent_with_growing_waits(
    locker: Locker, sim: Simulation, signer: Signer
) -> None:
    locker.connected()
    quiet = Desk(sim, locker, signer, acknowledge=False)
    quiet.take()
    sends: list[int] = []
    for _ in range(8):
        sim.run_for(30_000)
        sends.append(sum(1 for m in sim.take_messages(locker.locker_id) if isinstance(m, Birth)))
    # Resent 30 s, 90 s and 210 s after the first send (30, 60, 120 s waits: protocol §5.5).
    assert sends == [1, 0, 1, 0, 0, 0, 1, 0]
    locker.receive(Channel.ACK, encode(signer.ack(locker.locker_id, locker.boot_id, [1])))
    sim.run_for(600_000)
    assert not [m for m in sim.take_messages(locker.locker_id) if isinstance(m, Birth)]


def test_a_backlog_is_replayed_at_the_paced_rate(
    spec: LockerSpec, clock: ManualClock, signer: Signer
) -> None:
    locker = Locker(spec, clock)
    sim = Simulation([locker], clock)
    slam_doors(locker, 30)  # 60 events buffered while offline
    locker.connected()
    desk = Desk(sim, locker, signer)
    per_second = []
    for _ in range(4):
        per_second.append(len(sequenced(desk.take())))
        sim.run_for(1_000)
    # The birth (never held back) and a full bucket of 20 at once, then at most 20 a second
    # (protocol §5.5), until all 60 are through.
    assert per_second[0] == 21 and max(per_second[1:]) <= 20 and sum(per_second) == 61
    assert locker.view().pending_events == 0


def test_at_most_max_in_flight_are_unacknowledged_at_once(
    spec: LockerSpec, clock: ManualClock, signer: Signer
) -> None:
    locker = Locker(spec, clock, limits=OutboxLimits(max_in_flight=5))
    sim = Simulation([locker], clock)
    slam_doors(locker, 10)
    locker.connected()
    quiet = Desk(sim, locker, signer, acknowledge=False)
    first = sequenced(quiet.take())
    assert first == [(1, 21), (1, 1), (1, 2), (1, 3), (1, 4)]  # the birth first, then the oldest
    locker.receive(Channel.ACK, encode(signer.ack(locker.locker_id, 1, [21, 1, 2])))
    assert sequenced(quiet.take()) == [(1, 5), (1, 6), (1, 7)]


def test_a_reboot_keeps_the_buffer_and_replays_it_in_order_after_the_new_birth(
    locker: Locker, sim: Simulation, signer: Signer
) -> None:
    locker.connected()
    quiet = Desk(sim, locker, signer, acknowledge=False)
    quiet.take()
    slam_doors(locker, 2)
    locker.disconnected()
    locker.reboot()
    assert locker.boot_id == 2
    locker.connected()
    desk = Desk(sim, locker, signer)
    replay = sequenced(desk.take())
    assert replay == [(2, 1), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert locker.view().pending_events == 0


def test_the_json_file_store_survives_the_simulator_process(
    spec: LockerSpec, clock: ManualClock, signer: Signer, tmp_path: Path
) -> None:
    path = tmp_path / "locker.json"
    first = Locker(spec, clock, JsonFileStore(path), settings=Settings(heartbeat_s=30))
    slam_doors(first, 3)
    first.set_clock_skew(0)
    # A new process: a new Locker object on the same file is the same board, booting again.
    second = Locker(spec, clock, JsonFileStore(path))
    assert second.boot_id == first.boot_id + 1
    second.connected()
    sim = Simulation([second], clock)
    desk = Desk(sim, second, signer)
    assert sequenced(desk.take()) == [(2, 1)] + [(1, n) for n in range(1, 7)]
    # Afterwards: the acks were written through; a third boot has nothing left to replay.
    third = Locker(spec, clock, JsonFileStore(path))
    assert third.view().pending_events == 0 and third.boot_id == 3


def test_non_volatile_state_keeps_replay_window_codes_and_config(
    locker: Locker, sim: Simulation, signer: Signer, store: MemoryStore
) -> None:
    from protocol.messages import OpenCompartment, OpenPurpose, SetConfig

    locker.connected()
    desk = Desk(sim, locker, signer)
    desk.take()
    command = signer.command(locker.locker_id, OpenCompartment("A02", OpenPurpose.DEPOSIT))
    locker.receive(Channel.COMMAND, encode(command))
    desk.command(SetConfig(config_version=9, heartbeat_s=60))
    locker.reboot()
    locker.connected()
    desk.take()
    # Afterwards: the same command is still a known repeat, the config is still version 9.
    locker.receive(Channel.COMMAND, encode(command))
    assert desk.results() == []
    assert locker.settings.config_version == 9
    assert store.state is not None and store.state.replay.is_repeat(command.command_id)

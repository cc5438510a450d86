"""Losing the broker, the network or power, on a real Mosquitto, with an independent controller.

The observer plays the controller: it stores what arrives, drops duplicates by
``(locker, boot, seq)`` and acknowledges with signed acks. What must hold afterwards, for every
locker and every boot: the numbers received run from 1 without a gap, no number ever carried
two different messages, everything that happened while cut off arrived exactly once, and the
lockers' buffers are empty.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator

import pytest

from controller.embedded_broker import MosquittoProcess
from firmware_sim.faults import Fault, FaultKind
from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.outbox import OutboxLimits
from firmware_sim.people import Delays
from firmware_sim.settings import Settings
from firmware_sim.spec import generate_fleet
from protocol.codec import encode
from protocol.codes import code_hash, full_sync_pages
from protocol.messages import (
    Birth,
    CodeEntry,
    CommandResult,
    DeviceMessage,
    DoorForced,
    Event,
    Pickup,
    Presence,
    PresenceState,
)
from protocol.topics import Channel
from protocol.urls import BrokerAddress
from tests.firmware_sim.support import SEED, Observer, Signer, slam, stock, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

CODE = "271828"


def options(topic_root: str, time_scale: float = 1.0) -> FleetOptions:
    return FleetOptions(
        time_scale=time_scale,
        topic_root=topic_root,
        keepalive_s=5,
        settings=Settings(heartbeat_s=2),
        limits=OutboxLimits(retransmit_ms=1_000, retransmit_max_ms=2_000),
        reconnect_min_ms=200,
        reconnect_max_ms=1_000,
        attendant=None,
    )


def by_number(messages: list[DeviceMessage]) -> dict[tuple[int, int], set[bytes]]:
    """Every sequenced message, by (boot, seq), with the distinct payloads that carried it."""
    found: dict[tuple[int, int], set[bytes]] = defaultdict(set)
    for m in messages:
        if isinstance(m, Birth | Event | CommandResult):
            found[(m.boot_id, m.seq)].add(encode(m))
    return found


def assert_complete(messages: list[DeviceMessage]) -> None:
    numbers = by_number(messages)
    assert all(len(payloads) == 1 for payloads in numbers.values()), "one number, two messages"
    for boot in {boot for boot, _ in numbers}:
        seqs = sorted(seq for b, seq in numbers if b == boot)
        assert seqs == list(range(1, len(seqs) + 1)), f"gap in boot {boot}: {seqs}"


def unique_events(messages: list[DeviceMessage]) -> list[Event]:
    seen: dict[tuple[int, int], Event] = {}
    for m in messages:
        if isinstance(m, Event):
            seen.setdefault((m.boot_id, m.seq), m)
    return [seen[k] for k in sorted(seen)]


@pytest.fixture
def controller(private_broker: MosquittoProcess, topic_root: str) -> Iterator[Observer]:
    watcher = Observer(private_broker.address, topic_root, acker=Signer(SEED))
    watcher.client.reconnect_delay_set(min_delay=1, max_delay=1)
    yield watcher
    watcher.close()


def test_a_broker_outage_with_a_reboot_and_an_offline_pickup_loses_and_repeats_nothing(
    private_broker: MosquittoProcess, topic_root: str, controller: Observer
) -> None:
    specs = generate_fleet(10, SEED, prefix="OUT-")
    ids = [s.locker_id for s in specs]
    first, rebooter = ids[0], ids[1]
    signer = Signer(SEED)
    with MqttFleet(specs, private_broker.address, options(topic_root)) as fleet:
        assert fleet.wait_connected(30)
        # The controller gives the first locker a pickup code for a parcel in B01.
        key = signer.code_key(first)
        entry = CodeEntry(code_hash(key, first, CODE), "B01", "PARCEL-9", signer.now() + 86_400_000)
        sync = signer.command(first, full_sync_pages([entry], to_version=1)[0])
        controller.send(first, Channel.COMMAND, encode(sync))
        fleet.act(first, stock("B01"))
        wait_for(lambda: fleet.view(first).codes_cached == 1, 20, "the code cache synced")
        quiet = lambda: all(fleet.view(lid).pending_events == 0 for lid in ids)  # noqa: E731
        wait_for(quiet, 30, "everything acknowledged before the outage")

        private_broker.stop()
        wait_for(lambda: fleet.connected_count() == 0, 30, "every locker noticing the outage")
        for lid in ids:  # while cut off: a forced door at every locker
            fleet.act(lid, slam("A01"))
        fleet.run(
            lambda: fleet.people.recipient_picks_up(
                fleet.lockers[first], CODE, delays=Delays.fast()
            )
        )
        wait_for(lambda: not fleet.view(first).compartments["B01"].occupied, 20, "the pickup")
        wait_for(lambda: not fleet.view(first).compartments["B01"].door_open, 20, "door shut")
        assert fleet.inject(rebooter, Fault(FaultKind.REBOOT))
        fleet.act(rebooter, slam("A02"))
        private_broker.start()

        assert fleet.wait_connected(60)
        wait_for(quiet, 60, "every buffered message acknowledged after the outage")

    for lid in ids:
        messages = controller.of(lid)
        assert_complete(messages)
        forced = [e.data for e in unique_events(messages) if isinstance(e.data, DoorForced)]
        assert forced.count(DoorForced("A01")) == 1
    pickups = [e.data for e in unique_events(controller.of(first)) if isinstance(e.data, Pickup)]
    assert pickups == [Pickup("B01", code_hash(key, first, CODE), "PARCEL-9", offline=True)]
    # The rebooted locker: boot 1 complete (with its forced door), boot 2 complete after it.
    boots = {boot for boot, _ in by_number(controller.of(rebooter))}
    assert boots == {1, 2}
    second_boot = [e.data for e in unique_events(controller.of(rebooter)) if e.boot_id == 2]
    assert DoorForced("A02") in second_boot


def test_a_network_drop_shows_as_the_last_will_and_the_locker_comes_back(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    controller = Observer(mqtt_broker, topic_root, acker=Signer(SEED))
    specs = generate_fleet(2, SEED, prefix="NET-")
    lid = specs[0].locker_id

    def presences() -> list[PresenceState]:
        return [m.state for m in controller.of(lid, Presence) if isinstance(m, Presence)]

    try:
        with MqttFleet(specs, mqtt_broker, options(topic_root)) as fleet:
            assert fleet.wait_connected(20)
            wait_for(lambda: presences() == [PresenceState.ONLINE], 10, "online")
            assert fleet.inject(lid, Fault(FaultKind.NETWORK_DROP, duration_ms=1_500))
            fleet.act(lid, slam("A03"))
            wait_for(lambda: PresenceState.OFFLINE in presences(), 10, "the last will")
            wait_for(lambda: presences()[-1] is PresenceState.ONLINE, 20, "back online")
            wait_for(lambda: fleet.view(lid).pending_events == 0, 20, "replay acknowledged")
            # Afterwards: one drop, one reconnect; the other locker never noticed.
            assert presences() == [
                PresenceState.ONLINE,
                PresenceState.OFFLINE,
                PresenceState.ONLINE,
            ]
            assert fleet.stats().reconnects == 1
            forced = [e.data for e in unique_events(controller.of(lid))]
            assert forced.count(DoorForced("A03")) == 1
            assert_complete(controller.of(lid))
    finally:
        controller.close()


def test_each_locker_fault_reaches_the_controller_as_the_events_that_reveal_it(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    from firmware_sim.spec import generated_spec
    from protocol.messages import OpenCompartment, OpenPurpose, Telemetry

    controller = Observer(mqtt_broker, topic_root, acker=Signer(SEED))
    specs = [
        dataclasses.replace(generated_spec(f"FLT-{n}", SEED, model="LF-24C"), battery_backup_s=3600)
        for n in range(1, 8)
    ]
    jam, stuck, warm, power, skew, boot, cut = (s.locker_id for s in specs)
    minute = 60_000
    faults = {
        jam: Fault(FaultKind.DOOR_JAM, duration_ms=minute, compartment="A01"),
        stuck: Fault(FaultKind.STUCK_SENSOR, duration_ms=1_000, compartment="A01"),
        warm: Fault(
            FaultKind.TEMPERATURE_EXCURSION,
            duration_ms=30 * minute,
            compartment="C05",
            rise_deci_c_per_min=100,
        ),
        power: Fault(FaultKind.POWER_LOSS, duration_ms=1_000),
        skew: Fault(FaultKind.CLOCK_SKEW, duration_ms=minute, skew_ms=3_600_000),
        boot: Fault(FaultKind.REBOOT),
        cut: Fault(FaultKind.POWER_LOSS, duration_ms=1_000, battery=False),
    }

    def kinds(locker_id: str) -> list[str]:
        return [e.event.value for e in unique_events(controller.of(locker_id))]

    try:
        # Sixty times real speed, so that five-minute debounces take five seconds; the signer
        # takes its time from the lockers' clock.
        with MqttFleet(specs, mqtt_broker, options(topic_root, time_scale=60)) as fleet:
            signer = Signer(SEED, now=fleet.clock.now_ms)
            assert fleet.wait_connected(20)
            for locker_id, fault in faults.items():
                assert fleet.inject(locker_id, fault)
            opener = OpenCompartment("A01", OpenPurpose.DEPOSIT)
            controller.send(jam, Channel.COMMAND, encode(signer.command(jam, opener)))
            wait_for(lambda: "door_jammed" in kinds(jam), 20, "the jam")
            wait_for(lambda: kinds(stuck) == ["sensor_fault", "sensor_recovered"], 20, "sensor")
            wait_for(lambda: "temperature_excursion" in kinds(warm), 20, "the excursion")
            wait_for(lambda: kinds(power) == ["power_changed", "power_changed"], 20, "mains")
            wait_for(lambda: {b.boot_id for b in controller.of(boot, Birth)} == {1, 2}, 20)
            wait_for(lambda: {b.boot_id for b in controller.of(cut, Birth)} == {1, 2}, 20)

            def skewed() -> bool:
                stamps = [m.ts for m in controller.of(skew, Telemetry) if isinstance(m, Telemetry)]
                return any(ts - signer.now() > 3_000_000 for ts in stamps)

            wait_for(skewed, 20, "timestamps an hour ahead")
            # Afterwards: the power cut without battery was seen as the last will, then a boot.
            presences = [m.state for m in controller.of(cut, Presence) if isinstance(m, Presence)]
            assert PresenceState.OFFLINE in presences and presences[-1] is PresenceState.ONLINE
    finally:
        controller.close()

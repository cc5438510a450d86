"""A fleet on a real Mosquitto, watched and commanded by an independent paho client.

The observer knows nothing of the simulator but the seed (for the keys) and the topic root.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from firmware_sim.fleet import FleetOptions, MqttFleet
from firmware_sim.people import AttendantPolicy, Delays
from firmware_sim.settings import Settings
from firmware_sim.spec import generate_fleet
from protocol.codec import encode, message_to_object
from protocol.messages import (
    Birth,
    CommandResult,
    Event,
    OpenCompartment,
    OpenPurpose,
    Outcome,
    Presence,
    PresenceState,
    RefusalReason,
    Telemetry,
)
from protocol.topics import Channel
from protocol.urls import BrokerAddress
from tests.firmware_sim.support import SEED, Observer, Signer, wait_for

pytestmark = pytest.mark.mqtt


@pytest.fixture
def observer(mqtt_broker: BrokerAddress, topic_root: str) -> Iterator[Observer]:
    watcher = Observer(mqtt_broker, topic_root, acker=Signer(SEED))
    yield watcher
    watcher.close()


def fast_options(topic_root: str, attendant: AttendantPolicy | None = None) -> FleetOptions:
    """Heartbeat every second; nobody completes remote opens unless an attendant is given."""
    return FleetOptions(
        topic_root=topic_root, settings=Settings(heartbeat_s=1), attendant=attendant
    )


@pytest.mark.slow
def test_two_hundred_lockers_are_born_beat_and_die_before_an_independent_subscriber(
    mqtt_broker: BrokerAddress, topic_root: str, observer: Observer
) -> None:
    specs = generate_fleet(200, SEED, prefix="F200-")
    ids = {s.locker_id for s in specs}
    fleet = MqttFleet(specs, mqtt_broker, fast_options(topic_root))
    with fleet:
        assert fleet.wait_connected(60)
        wait_for(lambda: observer.lockers_with(Birth) == ids, 30, "a birth from every locker")
        wait_for(lambda: observer.lockers_with(Telemetry) == ids, 30, "a heartbeat from each")
        wait_for(lambda: fleet.stats().pubacks >= 200, 30, "PUBACKs for the births")
        stats = fleet.stats()
        # Counted on the client side: one CONNACK each, no refusals, no errors.
        assert (stats.connacks, stats.connack_refused, stats.errors) == (200, 0, 0)
        births = [b for lid in ids for b in observer.of(lid, Birth)]
        assert all(isinstance(b, Birth) and b.boot_id == 1 and b.seq == 1 for b in births)
        online = {m.locker_id for lid in ids for m in observer.of(lid, Presence)}
        assert online == ids
        wait_for(lambda: fleet.run(lambda: fleet.locker_counters()["boots"]) == 200, 5)

    # Afterwards: the fleet is gone; every locker's last will said so (retained, offline).
    def all_offline() -> bool:
        last = {}
        for lid in ids:
            presences = [m for m in observer.of(lid, Presence) if isinstance(m, Presence)]
            if presences:
                last[lid] = presences[-1].state
        return len(last) == 200 and set(last.values()) == {PresenceState.OFFLINE}

    wait_for(all_offline, 30, "the last wills of all 200 lockers")


def test_only_an_authentic_fresh_command_for_this_locker_opens_and_only_one_door(
    mqtt_broker: BrokerAddress, topic_root: str, observer: Observer
) -> None:
    specs = generate_fleet(3, SEED, prefix="CMD-")
    a, b = specs[0].locker_id, specs[1].locker_id
    signer = Signer(SEED)
    fleet = MqttFleet(specs, mqtt_broker, fast_options(topic_root))
    with fleet:
        assert fleet.wait_connected(30)
        wait_for(lambda: observer.lockers_with(Birth) == {s.locker_id for s in specs}, 20)

        def results(locker_id: str) -> list[CommandResult]:
            found = observer.of(locker_id, CommandResult)
            return [r for r in found if isinstance(r, CommandResult)]

        def released() -> dict[str, list[str]]:
            return {s.locker_id: fleet.view(s.locker_id).released for s in specs}

        genuine = signer.command(a, OpenCompartment("A02", OpenPurpose.PICKUP))
        observer.send(a, Channel.COMMAND, encode(genuine))
        wait_for(lambda: len(results(a)) == 1, 20, "the result of the genuine command")
        assert results(a)[0].outcome is Outcome.OPENED
        assert released() == {a: ["A02"], b: [], specs[2].locker_id: []}

        attempts = [
            # forged: signed with a key that is not the locker's
            (a, signer.command(a, OpenCompartment("A03", OpenPurpose.PICKUP), key=b"k" * 32)),
            # replayed: a new id, the counter of the genuine one
            (a, signer.command(a, OpenCompartment("A04", OpenPurpose.PICKUP), counter=1)),
            # cross-locker: a command for b, properly signed for b, sent to a's topic
            (a, signer.command(b, OpenCompartment("A05", OpenPurpose.PICKUP))),
            # addressed to b but signed with a's key
            (b, signer.command(b, OpenCompartment("A06", OpenPurpose.PICKUP), key=signer.key(a))),
        ]
        for target, command in attempts:
            observer.send(target, Channel.COMMAND, encode(command))
        observer.send(a, Channel.COMMAND, encode(genuine))  # the genuine one, once more
        wait_for(lambda: len(results(a)) == 4 and len(results(b)) == 1, 20, "four refusals")
        reasons = sorted(r.reason or "" for r in results(a)[1:] + results(b))
        assert reasons == sorted(
            [
                RefusalReason.BAD_SIGNATURE,
                RefusalReason.REPLAYED,
                RefusalReason.BAD_SIGNATURE,
                RefusalReason.BAD_SIGNATURE,
            ]
        )
        # Afterwards: still exactly one door released in the whole fleet, and the copy of the
        # genuine command was ignored without an answer.
        assert released() == {a: ["A02"], b: [], specs[2].locker_id: []}
        assert fleet.view(a).counters["command_repeats_ignored"] == 1
        openings = [
            e.data for s in specs for e in observer.of(s.locker_id, Event) if isinstance(e, Event)
        ]
        assert [type(d).__name__ for d in openings] == ["DoorOpened"]


def test_a_remote_deposit_is_completed_by_the_attendant(
    mqtt_broker: BrokerAddress, topic_root: str, observer: Observer
) -> None:
    specs = generate_fleet(1, SEED, prefix="DEP-")
    lid = specs[0].locker_id
    options = fast_options(topic_root, attendant=AttendantPolicy(delays=Delays.fast()))
    with MqttFleet(specs, mqtt_broker, options) as fleet:
        assert fleet.wait_connected(20)
        command = Signer(SEED).command(lid, OpenCompartment("A01", OpenPurpose.DEPOSIT))
        observer.send(lid, Channel.COMMAND, encode(command))

        def closed() -> list[dict[str, object]]:
            found = [message_to_object(e) for e in observer.of(lid, Event)]
            return [e["data"] for e in found if e["event"] == "door_closed"]

        wait_for(lambda: len(closed()) == 1, 20, "the door closing after the deposit")
        assert closed()[0]["occupied"] is True
        # Afterwards: the parcel is physically in A01 and the door is shut.
        view = fleet.view(lid).compartments["A01"]
        assert view.occupied and not view.door_open


def test_messages_on_topics_the_locker_did_not_subscribe_to_are_dropped(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    specs = generate_fleet(2, SEED, prefix="TOP-")
    with MqttFleet(specs, mqtt_broker, fast_options(topic_root)) as fleet:
        assert fleet.wait_connected(20)
        session = fleet.sessions[specs[0].locker_id]
        stray = SimpleNamespace(
            topic=fleet.layout.locker(specs[1].locker_id, Channel.COMMAND), payload=b"{}"
        )
        fleet.run(lambda: fleet._on_message(session.client, session, stray))
        stats = fleet.stats()
        assert (stats.foreign_dropped, stats.received) == (1, 0)
        assert fleet.view(specs[0].locker_id).counters.get("received", 0) == 0


def test_simulated_lockers_send_small_packets_at_once(
    mqtt_broker: BrokerAddress, topic_root: str
) -> None:
    """Nagle's algorithm off: a PUBACK and the publishes after it are not held for the
    broker's delayed ACK (up to 40 ms a time; see ``firmware_sim/netloop.py``)."""
    specs = generate_fleet(3, 7, prefix="NODELAY-")
    fleet = MqttFleet(specs, mqtt_broker, FleetOptions(topic_root=topic_root))
    with fleet:
        assert fleet.wait_connected(30)
        sockets = [s.client.socket() for s in fleet.sessions.values()]
        tcp = [s for s in sockets if isinstance(s, socket.socket)]
        assert len(tcp) == 3
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in tcp)
